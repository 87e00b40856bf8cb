// TetherPlatformAdapter.kt: feeds what Android sees to a tether node.
//
// - ConnectivityManager default-network callback -> NetworkSnapshot,
//   numbered with an increasing sequence and emitted only when the path
//   changed materially.
// - ProcessLifecycleOwner onStop/onStart -> AppLifecycleState, with the
//   background time measured on SystemClock.elapsedRealtime() (monotonic,
//   keeps counting in deep sleep).
// - Ordered delivery: every event goes into one unlimited Channel under one
//   lock, consumed by one coroutine that submits them one at a time, so the
//   node sees them in the order Android reported them.
//
// crates/ffi/python/tests/test_adapter.py holds a Python mirror of this
// logic as an executable specification; it does not test this file, which
// is not compiled on the project's machines.
// Needs the generated bindings (crates/ffi/generate.sh kotlin: package
// rt.tether), JNA, kotlinx-coroutines and androidx.lifecycle:lifecycle-process.

package rt.tether.platform

import android.content.Context
import android.net.ConnectivityManager
import android.net.LinkProperties
import android.net.Network
import android.net.NetworkCapabilities
import android.os.SystemClock
import android.util.Log
import androidx.lifecycle.DefaultLifecycleObserver
import androidx.lifecycle.LifecycleOwner
import androidx.lifecycle.ProcessLifecycleOwner
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.launch
import rt.tether.AppLifecycleState
import rt.tether.Availability
import rt.tether.NetworkEvent
import rt.tether.NetworkEventHandle
import rt.tether.NetworkSnapshot
import rt.tether.TetherException
import rt.tether.Transport

class TetherPlatformAdapter(
    context: Context,
    private val handle: NetworkEventHandle,
    private val scope: CoroutineScope,
) : DefaultLifecycleObserver {
    private val connectivity = context.getSystemService(ConnectivityManager::class.java)
    private val events = Channel<NetworkEvent>(Channel.UNLIMITED)
    private val lock = Any()

    // Guarded by `lock`.
    private var sequence = 0L
    private var lastPath: PathKey? = null
    private var backgroundSince: Long? = null
    private var network: Network? = null
    private var capabilities: NetworkCapabilities? = null
    private var linkProperties: LinkProperties? = null

    /** What makes two paths the same for recovery purposes. */
    private data class PathKey(
        val availability: Availability,
        val transports: List<Transport>,
        val isExpensive: Boolean,
        val isConstrained: Boolean,
        val pathId: Long,
    )

    private val callback = object : ConnectivityManager.NetworkCallback() {
        override fun onCapabilitiesChanged(network: Network, caps: NetworkCapabilities) {
            synchronized(lock) {
                if (network != this@TetherPlatformAdapter.network) linkProperties = null
                this@TetherPlatformAdapter.network = network
                capabilities = caps
                pathChanged()
            }
        }

        override fun onLinkPropertiesChanged(network: Network, properties: LinkProperties) {
            synchronized(lock) {
                if (network != this@TetherPlatformAdapter.network) return
                linkProperties = properties
                pathChanged()
            }
        }

        override fun onLost(network: Network) {
            synchronized(lock) {
                if (network != this@TetherPlatformAdapter.network) return
                this@TetherPlatformAdapter.network = null
                capabilities = null
                linkProperties = null
                pathChanged()
            }
        }
    }

    /** Starts monitoring. Call once, on the main thread. */
    fun start() {
        scope.launch {
            // One consumer, one submit at a time: the node sees the platform's order.
            for (event in events) {
                try {
                    handle.submit(event)
                } catch (e: TetherException.ShutDown) {
                    break // the node is gone; nothing more to deliver
                } catch (e: TetherException) {
                    Log.w(TAG, "tether refused $event: ${e.message}")
                }
            }
        }
        connectivity.registerDefaultNetworkCallback(callback)
        ProcessLifecycleOwner.get().lifecycle.addObserver(this)
    }

    /** Stops monitoring; events already reported are still delivered. Main thread. */
    fun stop() {
        connectivity.unregisterNetworkCallback(callback)
        ProcessLifecycleOwner.get().lifecycle.removeObserver(this)
        events.close()
    }

    // The app went to the background (process-wide: no activity started). Main thread.
    override fun onStop(owner: LifecycleOwner) {
        synchronized(lock) {
            if (backgroundSince != null) return
            backgroundSince = SystemClock.elapsedRealtime()
            events.trySend(NetworkEvent.AppLifecycleChanged(AppLifecycleState.Background))
        }
    }

    // The app came to the foreground (also once at process start). Main thread.
    override fun onStart(owner: LifecycleOwner) {
        synchronized(lock) {
            val since = backgroundSince
            backgroundSince = null
            val duration = if (since == null) 0L else maxOf(0L, SystemClock.elapsedRealtime() - since)
            events.trySend(NetworkEvent.AppLifecycleChanged(AppLifecycleState.Foreground(duration)))
        }
    }

    // Under `lock`.
    private fun pathChanged() {
        val caps = capabilities
        val availability = when {
            network == null || caps == null -> Availability.UNAVAILABLE
            caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED) -> Availability.AVAILABLE
            else -> Availability.UNKNOWN // captive portal, or not validated yet
        }
        val key = PathKey(
            availability = availability,
            transports = caps?.let(::transports).orEmpty(),
            isExpensive = caps != null &&
                !caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_NOT_METERED),
            isConstrained = connectivity.restrictBackgroundStatus ==
                ConnectivityManager.RESTRICT_BACKGROUND_STATUS_ENABLED,
            pathId = pathId(),
        )
        if (key == lastPath) return // not a material change
        lastPath = key
        sequence += 1
        val snapshot = NetworkSnapshot(
            sequence = sequence,
            availability = key.availability,
            transports = key.transports,
            isExpensive = key.isExpensive,
            isConstrained = key.isConstrained,
            pathId = key.pathId,
        )
        events.trySend(NetworkEvent.NetworkPathChanged(snapshot))
    }

    private fun transports(caps: NetworkCapabilities): List<Transport> = buildList {
        if (caps.hasTransport(NetworkCapabilities.TRANSPORT_WIFI)) add(Transport.WIFI)
        if (caps.hasTransport(NetworkCapabilities.TRANSPORT_CELLULAR)) add(Transport.CELLULAR)
        if (caps.hasTransport(NetworkCapabilities.TRANSPORT_ETHERNET)) add(Transport.ETHERNET)
        if (caps.hasTransport(NetworkCapabilities.TRANSPORT_VPN)) add(Transport.VPN)
        if (isEmpty()) add(Transport.OTHER) // Bluetooth, USB, Wi-Fi Aware, ...
    }

    /**
     * FNV-1a over the network's handle, interface and addresses: a new
     * network (another Wi-Fi, a renumbering) is a new route even on the
     * same transport. 0 = unknown. Under `lock`.
     */
    private fun pathId(): Long {
        val net = network ?: return 0L
        val parts = listOf(net.networkHandle.toString(), linkProperties?.interfaceName.orEmpty()) +
            linkProperties?.linkAddresses.orEmpty().map { it.toString() }.sorted()
        var hash = -0x340d631b7bdddcdbL // 0xcbf29ce484222325
        for (byte in parts.joinToString("|").toByteArray()) {
            hash = (hash xor (byte.toLong() and 0xff)) * 0x100000001b3L
        }
        return if (hash == 0L) 1L else hash
    }

    private companion object {
        const val TAG = "tether"
    }
}
