// TetherPlatformCore.kt: every decision of the Android adapter, in plain
// Kotlin (no Android SDK), compiled and tested on the JVM by
// crates/ffi/kotlin/test.sh against the real library.
//
// - Snapshot building: what the default-network callback reported
//   (capabilities, link properties, loss) -> availability, transports,
//   metering, Data Saver, path id.
// - Material-change filter and sequence numbering: a snapshot only when the
//   path changed, numbered 1, 2, 3, ...
// - Lifecycle: a repeated background is not sent again; the background time
//   is measured on an injected monotonic clock (on Android
//   SystemClock.elapsedRealtime(), which keeps counting in deep sleep).
// - Ordered delivery: one FIFO, one consumer, one `submit` at a time;
//   `TetherException.ShutDown` ends the consumer.
//
// The Android shell (../android/TetherPlatformAdapter.kt) only converts
// ConnectivityManager / ProcessLifecycleOwner callbacks into calls of
// `TetherPlatformCore`. Needs the generated bindings (package rt.tether) and
// kotlinx-coroutines.

package rt.tether.platform

import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.launch
import rt.tether.AppLifecycleState
import rt.tether.Availability
import rt.tether.NetworkEvent
import rt.tether.NetworkEventHandle
import rt.tether.NetworkSnapshot
import rt.tether.TetherException
import rt.tether.Transport

/** What `NetworkCapabilities` says about a network, in plain values. */
data class CapabilityFacts(
    /** `NET_CAPABILITY_VALIDATED`: the network reached the internet. */
    val validated: Boolean,
    /** The `TRANSPORT_*` flags tether knows; anything else is left out. */
    val transports: Set<Transport>,
    /** `NET_CAPABILITY_NOT_METERED`. */
    val notMetered: Boolean,
)

/** What `LinkProperties` says about a network, in plain values. */
data class LinkFacts(
    val interfaceName: String?,
    /** `LinkAddress.toString()` of each address, in any order. */
    val addresses: List<String>,
)

/** What makes two paths the same for recovery purposes. */
data class PlatformPath(
    val availability: Availability,
    val transports: List<Transport>,
    val isExpensive: Boolean,
    val isConstrained: Boolean,
    val pathId: Long,
)

/** The default network as the callbacks described it; `null` = none. */
data class DefaultNetwork(
    /** `Network.networkHandle`. */
    val handle: Long,
    val capabilities: CapabilityFacts,
    /** Unknown until `onLinkPropertiesChanged` for this network. */
    val link: LinkFacts?,
)

/** Snapshot building: the path tether sees for a default network. */
object PathBuilder {
    private val ORDER = listOf(Transport.WIFI, Transport.CELLULAR, Transport.ETHERNET, Transport.VPN, Transport.OTHER)

    fun path(network: DefaultNetwork?, dataSaver: Boolean): PlatformPath {
        if (network == null) {
            return PlatformPath(Availability.UNAVAILABLE, emptyList(), false, dataSaver, 0L)
        }
        val caps = network.capabilities
        val known = ORDER.filter { it in caps.transports }
        return PlatformPath(
            // Not validated: a captive portal, or not checked yet.
            availability = if (caps.validated) Availability.AVAILABLE else Availability.UNKNOWN,
            // Bluetooth, USB, Wi-Fi Aware, ... are `OTHER`.
            transports = known.ifEmpty { listOf(Transport.OTHER) },
            isExpensive = !caps.notMetered,
            isConstrained = dataSaver,
            pathId = pathId(network),
        )
    }

    /**
     * FNV-1a over the network's handle, interface and addresses: a new
     * network (another Wi-Fi, a renumbering) is a new route even on the
     * same transport. Never 0 (0 means "unknown" to tether).
     */
    fun pathId(network: DefaultNetwork): Long {
        val link = network.link
        val parts = listOf(network.handle.toString(), link?.interfaceName.orEmpty()) +
            link?.addresses.orEmpty().sorted()
        val hash = fnv1a64(parts.joinToString("|"))
        return if (hash == 0L) 1L else hash
    }

    /** 64-bit FNV-1a of the UTF-8 bytes of `text`, as a signed Long. */
    fun fnv1a64(text: String): Long {
        var hash = -0x340d631b7bdddcdbL // 0xcbf29ce484222325
        for (byte in text.toByteArray(Charsets.UTF_8)) {
            hash = (hash xor (byte.toLong() and 0xff)) * 0x100000001b3L
        }
        return hash
    }
}

/** Material-change filter and sequence numbering. Not thread-safe. */
class PathTracker {
    private var sequence = 0L
    private var last: PlatformPath? = null

    /** The snapshot to send for `path`, or `null` when nothing material changed. */
    fun update(path: PlatformPath): NetworkSnapshot? {
        if (path == last) return null // the platform repeats itself
        last = path
        sequence += 1
        return NetworkSnapshot(
            sequence = sequence,
            availability = path.availability,
            transports = path.transports,
            isExpensive = path.isExpensive,
            isConstrained = path.isConstrained,
            pathId = path.pathId,
        )
    }
}

/**
 * Background and foreground with the background time. `clock`: monotonic
 * milliseconds that keep counting while the device sleeps. Not thread-safe.
 */
class LifecycleTracker(private val clock: () -> Long) {
    private var backgroundSince: Long? = null

    /** The state to send on entering the background, or `null` when already there. */
    fun enteredBackground(): AppLifecycleState? {
        if (backgroundSince != null) return null
        backgroundSince = clock()
        return AppLifecycleState.Background
    }

    /** The state to send on entering the foreground (also at process start: 0 ms). */
    fun enteredForeground(): AppLifecycleState {
        val since = backgroundSince
        backgroundSince = null
        val duration = if (since == null) 0L else maxOf(0L, clock() - since)
        return AppLifecycleState.Foreground(duration)
    }
}

/**
 * Ordered delivery: events go into one unlimited FIFO; one coroutine
 * submits them one at a time, so the node sees the platform's order.
 * A refused event is logged and skipped; `TetherException.ShutDown` ends
 * delivery. Thread-safe.
 */
class OrderedDelivery(
    private val submit: suspend (NetworkEvent) -> Unit,
    private val log: (String) -> Unit,
) {
    private val events = Channel<NetworkEvent>(Channel.UNLIMITED)

    /** Queues `event`; never blocks. False once delivery ended. */
    fun offer(event: NetworkEvent): Boolean = events.trySend(event).isSuccess

    /** Starts the one consumer in `scope`. Call once. */
    fun start(scope: CoroutineScope): Job = scope.launch {
        for (event in events) {
            try {
                submit(event)
            } catch (e: TetherException.ShutDown) {
                log("tether shut down: event delivery ends")
                break // the node is gone; nothing more to deliver
            } catch (e: TetherException) {
                log("tether refused $event: ${e.message}")
            }
        }
        events.close()
    }

    /** No more events; those queued are still delivered. */
    fun close() {
        events.close()
    }
}

/**
 * Everything the Android adapter decides, behind one lock: call its
 * methods from the platform callbacks (any thread), in the order they came.
 *
 * `dataSaver`: whether Data Saver restricts this app
 * (`restrictBackgroundStatus == RESTRICT_BACKGROUND_STATUS_ENABLED`), read
 * at each network change. `clock`: `SystemClock.elapsedRealtime()`.
 */
class TetherPlatformCore(
    submit: suspend (NetworkEvent) -> Unit,
    private val clock: () -> Long,
    private val dataSaver: () -> Boolean = { false },
    log: (String) -> Unit = {},
) {
    /** Delivers to `handle.submit`. */
    constructor(
        handle: NetworkEventHandle,
        clock: () -> Long,
        dataSaver: () -> Boolean = { false },
        log: (String) -> Unit = {},
    ) : this({ event -> handle.submit(event) }, clock, dataSaver, log)

    private val lock = Any()
    private val delivery = OrderedDelivery(submit, log)

    // Guarded by `lock`.
    private var network: DefaultNetwork? = null
    private val paths = PathTracker()
    private val lifecycle = LifecycleTracker(clock)

    /** Starts delivering to the node in `scope`. Call once. */
    fun start(scope: CoroutineScope): Job = delivery.start(scope)

    /** Stops: later callbacks are ignored; queued events are still delivered. */
    fun stop() = delivery.close()

    /** `NetworkCallback.onCapabilitiesChanged` for the default network. */
    fun capabilitiesChanged(handle: Long, capabilities: CapabilityFacts) = synchronized(lock) {
        val current = network
        // Another network's link properties are not this one's.
        val link = if (current != null && current.handle == handle) current.link else null
        network = DefaultNetwork(handle, capabilities, link)
        pathChanged()
    }

    /** `NetworkCallback.onLinkPropertiesChanged`. */
    fun linkPropertiesChanged(handle: Long, link: LinkFacts) = synchronized(lock) {
        val current = network ?: return@synchronized
        if (current.handle != handle) return@synchronized
        network = current.copy(link = link)
        pathChanged()
    }

    /** `NetworkCallback.onLost`. */
    fun lost(handle: Long) = synchronized(lock) {
        if (network?.handle != handle) return@synchronized
        network = null
        pathChanged()
    }

    /** Data Saver changed (`ACTION_RESTRICT_BACKGROUND_CHANGED`). */
    fun restrictionsChanged() = synchronized(lock) { pathChanged() }

    /** `ProcessLifecycleOwner` `onStop`: no activity of the app is started. */
    fun enteredBackground() = synchronized(lock) {
        lifecycle.enteredBackground()?.let { delivery.offer(NetworkEvent.AppLifecycleChanged(it)) }
        Unit
    }

    /** `ProcessLifecycleOwner` `onStart` (also once at process start). */
    fun enteredForeground() = synchronized(lock) {
        delivery.offer(NetworkEvent.AppLifecycleChanged(lifecycle.enteredForeground()))
        Unit
    }

    // Under `lock`.
    private fun pathChanged() {
        val snapshot = paths.update(PathBuilder.path(network, dataSaver())) ?: return
        delivery.offer(NetworkEvent.NetworkPathChanged(snapshot))
    }
}
