// A simulated node through the generated Kotlin bindings: every event kind
// with its result checked, the state listener, and errors for bad input.

package rt.tether.test

import kotlinx.coroutines.withTimeout
import rt.tether.ActionKind
import rt.tether.AppLifecycleState
import rt.tether.Availability
import rt.tether.CleanupReason
import rt.tether.ConnectionState
import rt.tether.EventError
import rt.tether.FailureKind
import rt.tether.IceServer
import rt.tether.NetworkEvent
import rt.tether.NetworkEventResult
import rt.tether.NoAction
import rt.tether.ParkReason
import rt.tether.Policy
import rt.tether.ReconnectReason
import rt.tether.SimulatedEffects
import rt.tether.SimulatedFailure
import rt.tether.TetherException
import rt.tether.TetherNodeBuilder
import rt.tether.Transport
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNull
import kotlin.test.assertTrue

private fun assertAction(result: NetworkEventResult, action: ActionKind) {
    assertEquals(action, result.action, "$result")
    assertTrue(result.success, "$result")
    assertNull(result.error, "$result")
    assertNull(result.noAction, "$result")
}

private fun assertNoAction(result: NetworkEventResult, why: NoAction) {
    assertNull(result.action, "$result")
    assertTrue(result.success, "$result")
    assertEquals(why, result.noAction, "$result")
}

fun simulatedNodeTests(suite: Suite) {
    suite.test("simulated: network path changes, every availability") {
        withSimulatedNode { node ->
            val handle = node.handle()
            val first = snapshot(1)
            val restored = handle.networkPathChanged(first)
            assertAction(restored, ActionKind.RESTORE)
            assertEquals(NetworkEvent.NetworkPathChanged(first), restored.event)
            assertTrue(restored.durationMs >= 20u, "the scripted action's time: $restored")
            assertEquals(ConnectionState.Connected, node.state())

            assertNoAction(handle.networkPathChanged(first), NoAction.STALE)
            assertNoAction(handle.networkPathChanged(snapshot(2)), NoAction.DUPLICATE)
            assertNoAction(handle.networkPathChanged(snapshot(3, isExpensive = true, isConstrained = true)), NoAction.STATE_ONLY)
            val cellular = snapshot(4, transports = listOf(Transport.CELLULAR), isExpensive = true)
            assertAction(handle.networkPathChanged(cellular), ActionKind.RESTORE)
            // A new path id on the same transport is a roam; any Long is a valid id.
            assertAction(handle.networkPathChanged(snapshot(5, pathId = Long.MIN_VALUE)), ActionKind.RESTORE)
            assertAction(handle.networkPathChanged(snapshot(6, Availability.UNKNOWN)), ActionKind.PROBE)
            val offline = handle.networkPathChanged(snapshot(7, Availability.UNAVAILABLE))
            assertAction(offline, ActionKind.DISCONNECT)
            assertEquals(ConnectionState.Offline, node.state())
            assertAction(handle.networkPathChanged(snapshot(8)), ActionKind.RESTORE)
        }
    }

    suite.test("simulated: app lifecycle, short and long background") {
        withSimulatedNode { node ->
            val handle = node.handle()
            handle.networkPathChanged(snapshot(1))
            assertNoAction(handle.appLifecycleChanged(AppLifecycleState.Background), NoAction.STATE_ONLY)
            assertNoAction(handle.appLifecycleChanged(AppLifecycleState.Background), NoAction.DUPLICATE)
            assertAction(handle.appLifecycleChanged(AppLifecycleState.Foreground(1_500)), ActionKind.PROBE)
            handle.appLifecycleChanged(AppLifecycleState.Background)
            assertAction(handle.appLifecycleChanged(AppLifecycleState.Foreground(30_000)), ActionKind.RECONNECT)
        }
    }

    suite.test("simulated: cleanup, logout parks, manual reconnect unparks") {
        withSimulatedNode { node ->
            val handle = node.handle()
            handle.networkPathChanged(snapshot(1))
            assertAction(handle.cleanupConnections(CleanupReason.MANUAL_RESET), ActionKind.CLEANUP)
            assertEquals(ConnectionState.Closed, node.state())
            assertAction(handle.cleanupConnections(CleanupReason.USER_LOGOUT), ActionKind.CLEANUP)
            assertEquals(ConnectionState.Parked(ParkReason.USER_LOGOUT), node.state())
            val blocked = handle.networkPathChanged(snapshot(2, transports = listOf(Transport.CELLULAR)))
            assertFalse(blocked.success, "$blocked")
            assertEquals(NoAction.PARKED, blocked.noAction)
            assertEquals(EventError.Parked(ParkReason.USER_LOGOUT), blocked.error)
            assertEquals("recovery is parked (user_logout)", blocked.errorMessage)
            val refused = handle.forceReconnect(ReconnectReason.NETWORK_PATH_CHANGED)
            assertEquals(NoAction.PARKED, refused.noAction, "$refused")
            assertAction(handle.forceReconnect(ReconnectReason.MANUAL_RECONNECT), ActionKind.RECONNECT)
            assertEquals(ConnectionState.Connected, node.state())
        }
    }

    suite.test("simulated: a scripted failure is reported, not thrown") {
        val failRestore = SimulatedFailure(ActionKind.RESTORE, 1, FailureKind.TIMEOUT)
        withSimulatedNode(failures = listOf(failRestore)) { node ->
            val result = node.handle().networkPathChanged(snapshot(1))
            assertFalse(result.success, "$result")
            val error = result.error
            assertTrue(error is EventError.ActionFailed && error.action == ActionKind.RESTORE, "$result")
            assertTrue(result.errorMessage.orEmpty().isNotEmpty(), "$result")
        }
    }

    suite.test("simulated: submit returns on acceptance") {
        // Every action outlasts the test: a submit that waited for its result would time out.
        withSimulatedNode(durationMs = 3_600_000, configure = { it.shutdownTimeoutMs(100) }) { node ->
            val handle = node.handle()
            withTimeout(5_000) { handle.submit(NetworkEvent.NetworkPathChanged(snapshot(1))) }
            // Accepted, not finished: the restore it led to is running.
            waitUntil("the restore running") { node.state() == recovering(ActionKind.RESTORE) }
            withTimeout(5_000) {
                handle.submit(NetworkEvent.AppLifecycleChanged(AppLifecycleState.Background))
                handle.submit(NetworkEvent.AppLifecycleChanged(AppLifecycleState.Foreground(10)))
                handle.submit(NetworkEvent.CleanupConnections(CleanupReason.STALE_CONNECTION_SUSPECTED))
                handle.submit(NetworkEvent.ForceReconnect(ReconnectReason.PROBE_FAILED))
            }
            // Acted on: the cleanup cancelled the restore and runs (the reconnect waits for it).
            waitUntil("closed by the cleanup") { node.state() == ConnectionState.Closed }
        }
    }

    suite.test("simulated: the state listener sees recovering, then connected") {
        withSimulatedNode(durationMs = 200) { node ->
            val handle = node.handle()
            handle.networkPathChanged(snapshot(1))
            val recorder = StateRecorder()
            val subscription = node.subscribeState(recorder)
            recorder.waitFor { it == listOf(ConnectionState.Connected) } // the current state, at once
            assertAction(handle.forceReconnect(ReconnectReason.MANUAL_RECONNECT), ActionKind.RECONNECT)
            val states = recorder.waitFor { it.size >= 3 }
            assertEquals(listOf(ConnectionState.Connected, recovering(ActionKind.RECONNECT), ConnectionState.Connected), states)
            assertFalse(Thread.currentThread().name in recorder.threads, "listener called on the caller's thread")
            assertTrue(subscription.isActive())
            subscription.cancel()
            assertFalse(subscription.isActive())
            handle.networkPathChanged(snapshot(2, Availability.UNAVAILABLE))
            assertEquals(3, recorder.states().size, "a cancelled subscription got ${recorder.states()}")
        }
    }

    suite.test("simulated: a throwing listener does not break the node") {
        withSimulatedNode { node ->
            val calls = java.util.concurrent.atomic.AtomicInteger()
            node.subscribeState(object : rt.tether.StateListener {
                override fun onStateChanged(state: ConnectionState) {
                    calls.incrementAndGet()
                    throw IllegalStateException("a broken UI")
                }
            })
            assertAction(node.handle().networkPathChanged(snapshot(1)), ActionKind.RESTORE)
            waitUntil("the listener called again") { calls.get() >= 2 }
            assertEquals(ConnectionState.Connected, node.state())
        }
    }

    suite.test("errors: negative numbers are InvalidArgument naming the field") {
        withSimulatedNode { node ->
            val handle = node.handle()
            val seq = assertFailsWith<TetherException.InvalidArgument> { handle.networkPathChanged(snapshot(-5)) }
            assertTrue("NetworkSnapshot.sequence" in seq.message.orEmpty(), seq.message)
            val bg = assertFailsWith<TetherException.InvalidArgument> {
                handle.submit(NetworkEvent.AppLifecycleChanged(AppLifecycleState.Foreground(-1)))
            }
            assertTrue("background_duration_ms" in bg.message.orEmpty(), bg.message)
            // Nothing reached the node, which goes on working.
            assertAction(handle.networkPathChanged(snapshot(1)), ActionKind.RESTORE)
        }
    }

    suite.test("errors: bad configuration is InvalidConfig") {
        val negative = assertFailsWith<TetherException.InvalidConfig> {
            TetherNodeBuilder().simulated(SimulatedEffects(-1, emptyList())).build()
        }
        assertTrue("duration_ms" in negative.message.orEmpty(), negative.message)
        assertFailsWith<TetherException.InvalidConfig> {
            TetherNodeBuilder().simulated(SimulatedEffects(5, listOf(SimulatedFailure(ActionKind.PROBE, 0, FailureKind.TIMEOUT)))).build()
        }
        assertFailsWith<TetherException.InvalidConfig> {
            TetherNodeBuilder().simulated(SimulatedEffects(5, emptyList())).policy(Policy(offlineGraceMs = -1)).build()
        }
        // A live node needs a signaling URL, a peer id and a token.
        assertFailsWith<TetherException.InvalidConfig> { TetherNodeBuilder().peerId("alice").build() }
    }

    suite.test("errors: bad TLS, fallback and ICE settings are InvalidConfig naming the setting") {
        fun live() = TetherNodeBuilder()
            .signalingUrl("wss://signal.example:443/ws")
            .peerId("alice")
            .token("t")
            .relayOnly(true)
            .iceServers(listOf(IceServer(listOf("turn:turn.example:3478?transport=udp"), "u", "p")))
        val pem = assertFailsWith<TetherException.InvalidConfig> { live().tlsCaPem("not a certificate").build() }
        assertTrue("tls_ca_pem" in pem.message.orEmpty(), pem.message)
        val path = assertFailsWith<TetherException.InvalidConfig> { live().tlsCaPath("/nonexistent/ca.pem").build() }
        assertTrue("tls_ca_path" in path.message.orEmpty(), path.message)
        val fallback = assertFailsWith<TetherException.InvalidConfig> {
            live().fallbackSignalingUrls(listOf("ws://b.example/ws", "http://c.example/ws")).build()
        }
        assertTrue("fallback_signaling_urls" in fallback.message.orEmpty(), fallback.message)
        // Every setting valid: the node builds (it connects only when told to).
        val node = live().fallbackSignalingUrls(listOf("ws://b.example/ws")).build()
        node.shutdown()
        node.close()
    }

    suite.test("errors: a shut-down node fails fast; messaging needs a live node") {
        withSimulatedNode(configure = { it.resultTimeoutMs(600_000) }) { node ->
            val handle = node.handle()
            assertFailsWith<TetherException.Unsupported> { node.post("bob", "hi".toByteArray()) }
            assertFailsWith<TetherException.Unsupported> { node.connectPeer("bob") }
            node.shutdown()
            assertTrue(node.isShutDown() && handle.isShutDown())
            withTimeout(5_000) {
                assertFailsWith<TetherException.ShutDown> { handle.networkPathChanged(snapshot(1)) }
                assertFailsWith<TetherException.ShutDown> { handle.forceReconnect(ReconnectReason.MANUAL_RECONNECT) }
                assertFailsWith<TetherException.ShutDown> { handle.submit(NetworkEvent.AppLifecycleChanged(AppLifecycleState.Background)) }
            }
        }
    }
}
