// Two live nodes (signaling + WebRTC + reliable messaging) against the
// embedded test signaling server, on loopback only, through the Kotlin
// bindings; and the adapter core driving a live node.

package rt.tether.test

import kotlinx.coroutines.withTimeout
import rt.tether.ActionKind
import rt.tether.ConnectionState
import rt.tether.ReconnectReason
import rt.tether.TestSignalingServer
import rt.tether.TetherException
import rt.tether.TetherNode
import rt.tether.Transport
import rt.tether.startTestSignalingServer
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertNull
import kotlin.test.assertTrue

/** WebRTC connects and restarts take seconds on a loaded machine. */
private const val PROMPT_MS = 20_000L

/** alice and bob online and connected to each other, shut down after `body`. */
private suspend fun withLivePair(body: suspend (TestSignalingServer, TetherNode, TetherNode) -> Unit) {
    val server = startTestSignalingServer()
    val nodes = mutableListOf<TetherNode>()
    try {
        for (peer in listOf("alice", "bob")) {
            val node = server.nodeBuilder(peer).resultTimeoutMs(PROMPT_MS).build()
            nodes += node
            val result = node.handle().networkPathChanged(snapshot(1))
            assertTrue(result.action == ActionKind.RESTORE && result.success, "$peer online: $result")
            assertEquals(ConnectionState.Connected, node.state())
        }
        val (alice, bob) = nodes
        withTimeout(PROMPT_MS) { alice.connectPeer("bob") }
        body(server, alice, bob)
    } finally {
        for (node in nodes) {
            if (!node.isShutDown()) node.shutdown()
            node.close()
        }
        server.shutdown()
        server.close()
    }
}

/** The next `count` messages `node` receives, as "sender:text". */
private suspend fun receiveTexts(node: TetherNode, count: Int): List<String> = List(count) {
    val message = withTimeout(PROMPT_MS) { node.receive() }
    "${message.sender}:${message.payload.decodeToString()}"
}

/** Posts `count` numbered messages each way; each side receives exactly those, in order. */
private suspend fun exchange(alice: TetherNode, bob: TetherNode, label: String, count: Int = 5) {
    for (i in 0 until count) {
        alice.post("bob", "$label:a$i".toByteArray())
        bob.post("alice", "$label:b$i".toByteArray())
    }
    assertEquals(List(count) { "alice:$label:a$it" }, receiveTexts(bob, count), "bob received ($label)")
    assertEquals(List(count) { "bob:$label:b$it" }, receiveTexts(alice, count), "alice received ($label)")
}

fun liveNodeTests(suite: Suite) {
    suite.test("live: messages across a forced reconnect and a handoff, nothing lost") {
        withLivePair { server, alice, bob ->
            assertTrue(server.url().startsWith("ws://127.0.0.1:"), server.url())
            withTimeout(PROMPT_MS) { alice.send("bob", "hello bob".toByteArray()) } // waits for the ack
            assertEquals(listOf("alice:hello bob"), receiveTexts(bob, 1))
            assertTrue("bob" in alice.connectedPeers(), "${alice.connectedPeers()}")
            // On loopback without TURN, ICE selected a direct host pair.
            val route = alice.peerRoute("bob")
            assertTrue(route != null && route.local.candidateType == "host" && !route.relayed, "$route")
            exchange(alice, bob, "warm")

            // Messages posted before the forced reconnect arrive after it.
            val recorder = StateRecorder()
            alice.subscribeState(recorder)
            recorder.waitFor { it == listOf(ConnectionState.Connected) }
            for (i in 0 until 5) alice.post("bob", "during:$i".toByteArray())
            val result = alice.handle().forceReconnect(ReconnectReason.MANUAL_RECONNECT)
            assertTrue(result.action == ActionKind.RECONNECT && result.success, "$result")
            val states = recorder.waitFor(PROMPT_MS) { it.size >= 3 && it.last() == ConnectionState.Connected }
            assertTrue(recovering(ActionKind.RECONNECT) in states, "$states")
            assertEquals(List(5) { "alice:during:$it" }, receiveTexts(bob, 5))
            exchange(alice, bob, "after-reconnect")

            // A handoff to cellular restores without losing anything.
            val handoff = snapshot(2, transports = listOf(Transport.CELLULAR), isExpensive = true)
            val restored = bob.handle().networkPathChanged(handoff)
            assertTrue(restored.action == ActionKind.RESTORE && restored.success, "$restored")
            exchange(alice, bob, "after-handoff")

            // Signaling dies on its own: the node notices and restores it.
            assertTrue(alice.simulateSignalingLoss())
            waitUntil("alice connected again", PROMPT_MS) { alice.state() == ConnectionState.Connected }
            exchange(alice, bob, "after-signaling-loss")

            // Nothing arrived twice.
            assertNull(alice.tryReceive())
            assertNull(bob.tryReceive())
            val report = alice.shutdown()
            assertNull(report.cleanupError, report.cleanupError)
        }
    }

    suite.test("live: messaging errors are clear exceptions") {
        withLivePair { server, alice, bob ->
            assertFailsWith<TetherException.InvalidArgument> { alice.post("", "to nobody".toByteArray()) }
            assertFailsWith<TetherException.InvalidArgument> { alice.send("alice", "to myself".toByteArray()) }
            assertFailsWith<TetherException.InvalidArgument> { alice.post("bob", ByteArray(70_000)) }
            assertFailsWith<TetherException.InvalidArgument> { server.token("") }
            assertFailsWith<TetherException.InvalidConfig> { server.nodeBuilder("carol").sendDeadlineMs(0).build() }
            bob.shutdown()
            assertFailsWith<TetherException.ShutDown> { bob.post("alice", "from the grave".toByteArray()) }
            assertFailsWith<TetherException.ShutDown> { bob.receive() }
        }
    }
}
