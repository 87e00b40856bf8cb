// TetherPlatformAdapter.kt: the Android shell around TetherPlatformCore.
//
// It only converts what Android reports into plain values and calls the
// core, which makes every decision (../core/TetherPlatformCore.kt, compiled
// and tested on the JVM by crates/ffi/kotlin/test.sh):
//
// - ConnectivityManager default-network callback -> CapabilityFacts /
//   LinkFacts / lost;
// - Data Saver (restrictBackgroundStatus) read at each network change and
//   on ACTION_RESTRICT_BACKGROUND_CHANGED;
// - ProcessLifecycleOwner onStop/onStart -> background/foreground, timed on
//   SystemClock.elapsedRealtime() (monotonic, keeps counting in deep sleep).
//
// This file is NOT compiled on the project's machines (no Android SDK).
// Needs the generated bindings (crates/ffi/generate.sh kotlin: package
// rt.tether), core/TetherPlatformCore.kt, JNA, kotlinx-coroutines and
// androidx.lifecycle:lifecycle-process.

package rt.tether.platform

import android.content.BroadcastReceiver
import android.content.Context
import android.content.Intent
import android.content.IntentFilter
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
import rt.tether.NetworkEventHandle
import rt.tether.Transport

class TetherPlatformAdapter(
    private val context: Context,
    handle: NetworkEventHandle,
    private val scope: CoroutineScope,
) : DefaultLifecycleObserver {
    private val connectivity = context.getSystemService(ConnectivityManager::class.java)
    private val core = TetherPlatformCore(
        handle = handle,
        clock = SystemClock::elapsedRealtime,
        dataSaver = {
            connectivity.restrictBackgroundStatus ==
                ConnectivityManager.RESTRICT_BACKGROUND_STATUS_ENABLED
        },
        log = { message -> Log.w(TAG, message) },
    )

    private val callback = object : ConnectivityManager.NetworkCallback() {
        override fun onCapabilitiesChanged(network: Network, caps: NetworkCapabilities) {
            core.capabilitiesChanged(network.networkHandle, facts(caps))
        }

        override fun onLinkPropertiesChanged(network: Network, properties: LinkProperties) {
            core.linkPropertiesChanged(
                network.networkHandle,
                LinkFacts(properties.interfaceName, properties.linkAddresses.map { it.toString() }),
            )
        }

        override fun onLost(network: Network) {
            core.lost(network.networkHandle)
        }
    }

    private val dataSaverReceiver = object : BroadcastReceiver() {
        override fun onReceive(context: Context, intent: Intent) = core.restrictionsChanged()
    }

    /** Starts monitoring. Call once, on the main thread. */
    fun start() {
        core.start(scope)
        connectivity.registerDefaultNetworkCallback(callback)
        context.registerReceiver(
            dataSaverReceiver,
            IntentFilter(ConnectivityManager.ACTION_RESTRICT_BACKGROUND_CHANGED),
        )
        ProcessLifecycleOwner.get().lifecycle.addObserver(this)
    }

    /** Stops monitoring; events already reported are still delivered. Main thread. */
    fun stop() {
        connectivity.unregisterNetworkCallback(callback)
        context.unregisterReceiver(dataSaverReceiver)
        ProcessLifecycleOwner.get().lifecycle.removeObserver(this)
        core.stop()
    }

    // The app went to the background (process-wide: no activity started). Main thread.
    override fun onStop(owner: LifecycleOwner) = core.enteredBackground()

    // The app came to the foreground (also once at process start). Main thread.
    override fun onStart(owner: LifecycleOwner) = core.enteredForeground()

    private fun facts(caps: NetworkCapabilities) = CapabilityFacts(
        validated = caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED),
        transports = buildSet {
            if (caps.hasTransport(NetworkCapabilities.TRANSPORT_WIFI)) add(Transport.WIFI)
            if (caps.hasTransport(NetworkCapabilities.TRANSPORT_CELLULAR)) add(Transport.CELLULAR)
            if (caps.hasTransport(NetworkCapabilities.TRANSPORT_ETHERNET)) add(Transport.ETHERNET)
            if (caps.hasTransport(NetworkCapabilities.TRANSPORT_VPN)) add(Transport.VPN)
        },
        notMetered = caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_NOT_METERED),
    )

    private companion object {
        const val TAG = "tether"
    }
}
