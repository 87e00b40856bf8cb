// Shared helpers of the Kotlin tests: nodes, snapshots, a state recorder.

package rt.tether.test

import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.withTimeoutOrNull
import rt.tether.ActionKind
import rt.tether.Availability
import rt.tether.ConnectionState
import rt.tether.NetworkSnapshot
import rt.tether.SimulatedEffects
import rt.tether.SimulatedFailure
import rt.tether.StateListener
import rt.tether.TetherNode
import rt.tether.TetherNodeBuilder
import rt.tether.Transport

/** A simulated node (real engine and runtime, scripted actions), shut down after `body`. */
suspend fun <T> withSimulatedNode(
    durationMs: Long = 20,
    failures: List<SimulatedFailure> = emptyList(),
    configure: (TetherNodeBuilder) -> TetherNodeBuilder = { it },
    body: suspend (TetherNode) -> T,
): T {
    val node = configure(
        TetherNodeBuilder().name("kotlin").simulated(SimulatedEffects(durationMs, failures)),
    ).build()
    try {
        return body(node)
    } finally {
        if (!node.isShutDown()) node.shutdown()
        node.close()
    }
}

fun snapshot(
    sequence: Long,
    availability: Availability = Availability.AVAILABLE,
    transports: List<Transport>? = null,
    isExpensive: Boolean = false,
    isConstrained: Boolean = false,
    pathId: Long = 0,
) = NetworkSnapshot(
    sequence = sequence,
    availability = availability,
    transports = transports ?: if (availability == Availability.UNAVAILABLE) emptyList() else listOf(Transport.WIFI),
    isExpensive = isExpensive,
    isConstrained = isConstrained,
    pathId = pathId,
)

fun recovering(action: ActionKind, attempt: Int = 1) = ConnectionState.Recovering(action, attempt.toUInt())

/**
 * A state listener that records every state and the thread it came on; tests
 * wait on it without polling (`waitFor`).
 */
class StateRecorder : StateListener {
    private val states = MutableStateFlow<List<ConnectionState>>(emptyList())
    val threads: MutableSet<String> = java.util.concurrent.ConcurrentHashMap.newKeySet()

    override fun onStateChanged(state: ConnectionState) {
        threads += Thread.currentThread().name
        states.value = states.value + state // one call at a time per subscription
    }

    fun states(): List<ConnectionState> = states.value

    /** Until `predicate(states)` holds; fails after `timeoutMs` with what was seen. */
    suspend fun waitFor(timeoutMs: Long = 5_000, predicate: (List<ConnectionState>) -> Boolean): List<ConnectionState> =
        withTimeoutOrNull(timeoutMs) { states.first(predicate) }
            ?: throw AssertionError("state listener saw only ${states.value} in $timeoutMs ms")
}
