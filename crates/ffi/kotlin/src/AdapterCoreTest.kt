// The Android adapter's decision logic (platform/kotlin/core), compiled and
// run here: snapshot building, material-change filter and sequence
// numbering, lifecycle durations, ordered delivery; and the core driving a
// real simulated node through the bindings.

package rt.tether.test

import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.withTimeout
import rt.tether.ActionKind
import rt.tether.AppLifecycleState
import rt.tether.Availability
import rt.tether.ConnectionState
import rt.tether.NetworkEvent
import rt.tether.NetworkSnapshot
import rt.tether.TetherException
import rt.tether.Transport
import rt.tether.platform.CapabilityFacts
import rt.tether.platform.DefaultNetwork
import rt.tether.platform.LifecycleTracker
import rt.tether.platform.LinkFacts
import rt.tether.platform.PathBuilder
import rt.tether.platform.PathTracker
import rt.tether.platform.PlatformPath
import rt.tether.platform.TetherPlatformCore
import kotlin.test.assertEquals
import kotlin.test.assertNotEquals
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue

private val WIFI_VALIDATED = CapabilityFacts(validated = true, transports = setOf(Transport.WIFI), notMetered = true)
private val CELLULAR_VALIDATED = CapabilityFacts(validated = true, transports = setOf(Transport.CELLULAR), notMetered = false)
private val WLAN0 = LinkFacts("wlan0", listOf("192.168.1.20/24", "fe80::1/64"))

/** A fake `submit`: records what it is given; `refuse` decides what to throw. */
private class RecordingSubmit(private val refuse: (NetworkEvent) -> TetherException? = { null }) {
    val delivered = MutableStateFlow<List<NetworkEvent>>(emptyList())

    suspend fun submit(event: NetworkEvent) {
        refuse(event)?.let { throw it }
        delivered.value = delivered.value + event
    }

    suspend fun awaitCount(count: Int): List<NetworkEvent> =
        withTimeout(5_000) { delivered.first { it.size >= count } }
}

private fun sequences(events: List<NetworkEvent>) =
    events.filterIsInstance<NetworkEvent.NetworkPathChanged>().map { it.snapshot.sequence }

fun adapterCoreTests(suite: Suite) {
    suite.test("adapter core: FNV-1a matches the published test vectors") {
        assertEquals(0xcbf29ce484222325uL.toLong(), PathBuilder.fnv1a64(""))
        assertEquals(0xaf63dc4c8601ec8cuL.toLong(), PathBuilder.fnv1a64("a"))
        assertEquals(0x85944171f73967e8uL.toLong(), PathBuilder.fnv1a64("foobar"))
    }

    suite.test("adapter core: snapshot building from the callback facts") {
        assertEquals(
            PlatformPath(Availability.UNAVAILABLE, emptyList(), false, true, 0L),
            PathBuilder.path(null, dataSaver = true),
        )
        val wifi = PathBuilder.path(DefaultNetwork(100, WIFI_VALIDATED, WLAN0), dataSaver = false)
        assertEquals(Availability.AVAILABLE, wifi.availability)
        assertEquals(listOf(Transport.WIFI), wifi.transports)
        assertEquals(false, wifi.isExpensive)
        assertNotEquals(0L, wifi.pathId)
        // Not validated (a captive portal): unknown. Metered: expensive.
        val portal = PathBuilder.path(DefaultNetwork(100, CELLULAR_VALIDATED.copy(validated = false), null), false)
        assertEquals(Availability.UNKNOWN, portal.availability)
        assertEquals(true, portal.isExpensive)
        // A fixed transport order; nothing tether knows is OTHER.
        val vpn = CapabilityFacts(true, setOf(Transport.VPN, Transport.WIFI), true)
        assertEquals(listOf(Transport.WIFI, Transport.VPN), PathBuilder.path(DefaultNetwork(1, vpn, null), false).transports)
        val bluetooth = CapabilityFacts(true, emptySet(), true)
        assertEquals(listOf(Transport.OTHER), PathBuilder.path(DefaultNetwork(1, bluetooth, null), false).transports)
    }

    suite.test("adapter core: the path id follows handle, interface and addresses, not their order") {
        val id = { handle: Long, link: LinkFacts? -> PathBuilder.pathId(DefaultNetwork(handle, WIFI_VALIDATED, link)) }
        assertEquals(id(100, WLAN0), id(100, WLAN0.copy(addresses = WLAN0.addresses.reversed())))
        assertNotEquals(id(100, WLAN0), id(101, WLAN0), "another network")
        assertNotEquals(id(100, WLAN0), id(100, WLAN0.copy(addresses = listOf("10.0.0.7/24"))), "renumbered")
        assertNotEquals(id(100, WLAN0), id(100, null), "link properties not known yet")
    }

    suite.test("adapter core: material changes only, numbered 1, 2, 3") {
        val tracker = PathTracker()
        val wifi = PathBuilder.path(DefaultNetwork(100, WIFI_VALIDATED, WLAN0), false)
        assertEquals(1L, tracker.update(wifi)?.sequence)
        assertNull(tracker.update(wifi), "a repeated path is not material")
        assertNull(tracker.update(wifi.copy()), "an equal path is not material")
        val saver = tracker.update(wifi.copy(isConstrained = true))
        assertEquals(2L, saver?.sequence)
        assertEquals(true, saver?.isConstrained)
        val gone = tracker.update(PathBuilder.path(null, false))
        assertEquals(NetworkSnapshot(3, Availability.UNAVAILABLE, emptyList(), false, false, 0), gone)
    }

    suite.test("adapter core: lifecycle durations on the monotonic clock") {
        var now = 1_000_000L
        val lifecycle = LifecycleTracker { now }
        assertEquals(AppLifecycleState.Foreground(0), lifecycle.enteredForeground(), "process start")
        assertEquals(AppLifecycleState.Background, lifecycle.enteredBackground())
        now += 10_000
        assertNull(lifecycle.enteredBackground(), "a repeated background is not sent again")
        now += 35_000
        assertEquals(AppLifecycleState.Foreground(45_000), lifecycle.enteredForeground(), "timed from the first background")
        assertEquals(AppLifecycleState.Foreground(0), lifecycle.enteredForeground(), "a repeated foreground")
        lifecycle.enteredBackground()
        now -= 5 // a clock that must not go back; never a negative duration
        assertEquals(AppLifecycleState.Foreground(0), lifecycle.enteredForeground())
    }

    suite.test("adapter core: callbacks become ordered events, stale networks ignored") {
        val fake = RecordingSubmit()
        var now = 0L
        val core = TetherPlatformCore(fake::submit, clock = { now })
        coroutineScope {
            val consumer = core.start(this)
            core.capabilitiesChanged(100, WIFI_VALIDATED) // 1
            core.capabilitiesChanged(100, WIFI_VALIDATED) // repeated
            core.linkPropertiesChanged(100, WLAN0) // 2: now the path id is known
            core.linkPropertiesChanged(999, LinkFacts("rmnet0", listOf("10.1.1.1/32"))) // not the default network
            core.enteredBackground()
            core.lost(999) // not the default network
            core.capabilitiesChanged(200, CELLULAR_VALIDATED) // 3: handoff; wlan0's link is not cellular's
            core.lost(100) // the old network, already replaced
            now += 2_000
            core.enteredForeground()
            core.lost(200) // 4
            val events = fake.awaitCount(6)
            assertEquals(listOf(1L, 2L, 3L, 4L), sequences(events))
            val paths = events.filterIsInstance<NetworkEvent.NetworkPathChanged>().map { it.snapshot }
            assertEquals(PathBuilder.pathId(DefaultNetwork(200, CELLULAR_VALIDATED, null)), paths[2].pathId)
            assertEquals(Availability.UNAVAILABLE, paths[3].availability)
            val lifecycle = events.filterIsInstance<NetworkEvent.AppLifecycleChanged>().map { it.state }
            assertEquals(listOf(AppLifecycleState.Background, AppLifecycleState.Foreground(2_000)), lifecycle)
            // The order the callbacks came in.
            assertTrue(events[2] is NetworkEvent.AppLifecycleChanged && events[4] is NetworkEvent.AppLifecycleChanged, "$events")
            core.stop()
            withTimeout(5_000) { consumer.join() }
        }
    }

    suite.test("adapter core: a refused event is logged and skipped; ShutDown ends delivery") {
        val logged = java.util.Collections.synchronizedList(mutableListOf<String>())
        val fake = RecordingSubmit { event ->
            val sequence = (event as? NetworkEvent.NetworkPathChanged)?.snapshot?.sequence
            when (sequence) {
                1L -> TetherException.InvalidArgument("refused for the test")
                3L -> TetherException.ShutDown("the node is gone")
                else -> null
            }
        }
        val core = TetherPlatformCore(fake::submit, clock = { 0 }, log = { logged += it })
        coroutineScope {
            val consumer = core.start(this)
            core.capabilitiesChanged(100, WIFI_VALIDATED) // 1: refused, logged
            core.linkPropertiesChanged(100, WLAN0) // 2: delivered
            core.lost(100) // 3: ShutDown, the end
            core.capabilitiesChanged(200, CELLULAR_VALIDATED) // 4: never delivered
            withTimeout(5_000) { consumer.join() }
            assertEquals(listOf(2L), sequences(fake.delivered.value))
            assertEquals(2, logged.size, "$logged")
            assertTrue("refused" in logged[0] && "shut down" in logged[1], "$logged")
            core.enteredBackground() // after the end: dropped, nothing throws
        }
    }

    suite.test("adapter core drives a simulated node: a long background reconnects") {
        withSimulatedNode(durationMs = 100) { node ->
            val recorder = StateRecorder()
            node.subscribeState(recorder)
            var now = 5_000_000L
            val core = TetherPlatformCore(node.handle(), clock = { now })
            coroutineScope {
                val consumer = core.start(this)
                core.capabilitiesChanged(100, WIFI_VALIDATED)
                core.linkPropertiesChanged(100, WLAN0)
                recorder.waitFor { it.lastOrNull() == ConnectionState.Connected }
                core.enteredBackground()
                now += 45_000 // asleep in the background
                core.enteredForeground()
                recorder.waitFor { it.takeLast(2) == listOf(recovering(ActionKind.RECONNECT), ConnectionState.Connected) }
                node.shutdown()
                core.capabilitiesChanged(200, CELLULAR_VALIDATED) // refused with ShutDown: delivery ends
                withTimeout(5_000) { consumer.join() }
                assertNotNull(consumer)
            }
        }
    }
}
