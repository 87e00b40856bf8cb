// TetherPlatformAdapter.swift: feeds what iOS sees to a tether node.
//
// - NWPathMonitor -> NetworkSnapshot, numbered with an increasing sequence
//   and emitted only when the path changed materially.
// - UIApplication background/foreground -> AppLifecycleState, with the
//   background time measured on ContinuousClock (monotonic, keeps counting
//   while the device sleeps).
// - Ordered delivery: every event goes into one AsyncStream, consumed by
//   one task that submits them one at a time, so the node sees them in the
//   order iOS reported them.
//
// crates/ffi/python/tests/test_adapter.py holds a Python mirror of this
// logic as an executable specification; it does not test this file, which
// is not compiled on the project's machines.
// Requires iOS 16 / macOS 13 (ContinuousClock) and the generated `Tether`
// module (crates/ffi/generate.sh swift).

import Foundation
import Network
import Tether
#if canImport(UIKit)
import UIKit
#endif

public final class TetherPlatformAdapter: @unchecked Sendable {
    private let handle: NetworkEventHandle
    private let monitor = NWPathMonitor()
    /// Serial: every field below is read and written only on this queue.
    private let queue = DispatchQueue(label: "tether.platform-adapter")
    private let clock = ContinuousClock()
    private var sequence: Int64 = 0
    private var lastPath: PathKey?
    private var backgroundSince: ContinuousClock.Instant?
    private var observers: [NSObjectProtocol] = []
    private let events: AsyncStream<NetworkEvent>
    private let continuation: AsyncStream<NetworkEvent>.Continuation
    private var consumer: Task<Void, Never>?

    /// What makes two paths the same for recovery purposes.
    private struct PathKey: Equatable {
        var availability: Availability
        var transports: [Transport]
        var isExpensive: Bool
        var isConstrained: Bool
        var pathId: Int64
    }

    public init(handle: NetworkEventHandle) {
        self.handle = handle
        (events, continuation) = AsyncStream.makeStream(
            of: NetworkEvent.self, bufferingPolicy: .unbounded)
    }

    /// Starts monitoring. Call once, early, from the main thread (the first
    /// path update comes at once and tells the node where it stands).
    public func start() {
        let handle = self.handle
        let events = self.events
        consumer = Task.detached {
            // One consumer, one submit at a time: the node sees the platform's order.
            for await event in events {
                do {
                    try await handle.submit(event: event)
                } catch TetherError.ShutDown {
                    break  // the node is gone; nothing more to deliver
                } catch {
                    NSLog("tether: event refused: %@", String(describing: error))
                }
            }
        }
        monitor.pathUpdateHandler = { [weak self] path in self?.pathChanged(path) }
        monitor.start(queue: queue)
        #if canImport(UIKit)
        let center = NotificationCenter.default
        observers = [
            center.addObserver(
                forName: UIApplication.didEnterBackgroundNotification, object: nil, queue: nil
            ) { [weak self] _ in self?.queue.async { self?.enteredBackground() } },
            center.addObserver(
                forName: UIApplication.willEnterForegroundNotification, object: nil, queue: nil
            ) { [weak self] _ in self?.queue.async { self?.enteredForeground() } },
        ]
        #endif
    }

    /// Stops monitoring; events already reported are still delivered.
    /// Call `start` and `stop` from the main thread.
    public func stop() {
        monitor.cancel()
        for observer in observers {
            NotificationCenter.default.removeObserver(observer)
        }
        observers = []
        continuation.finish()
    }

    // On `queue` (NWPathMonitor's queue).
    private func pathChanged(_ path: NWPath) {
        let availability: Availability
        switch path.status {
        case .satisfied: availability = .available
        case .unsatisfied: availability = .unavailable
        case .requiresConnection: availability = .unknown
        @unknown default: availability = .unknown
        }
        let key = PathKey(
            availability: availability,
            transports: Self.transports(of: path),
            isExpensive: path.isExpensive,
            isConstrained: path.isConstrained,
            pathId: Self.pathId(of: path))
        guard key != lastPath else { return }  // not a material change
        lastPath = key
        sequence += 1
        let snapshot = NetworkSnapshot(
            sequence: sequence,
            availability: key.availability,
            transports: key.transports,
            isExpensive: key.isExpensive,
            isConstrained: key.isConstrained,
            pathId: key.pathId)
        continuation.yield(.networkPathChanged(snapshot: snapshot))
    }

    // On `queue`.
    private func enteredBackground() {
        guard backgroundSince == nil else { return }
        backgroundSince = clock.now
        continuation.yield(.appLifecycleChanged(state: .background))
    }

    // On `queue`.
    private func enteredForeground() {
        let since = backgroundSince
        backgroundSince = nil
        let duration = since.map { Self.milliseconds(clock.now - $0) } ?? 0
        continuation.yield(.appLifecycleChanged(state: .foreground(backgroundDurationMs: duration)))
    }

    private static func transports(of path: NWPath) -> [Transport] {
        var transports: [Transport] = []
        if path.usesInterfaceType(.wifi) { transports.append(.wifi) }
        if path.usesInterfaceType(.cellular) { transports.append(.cellular) }
        if path.usesInterfaceType(.wiredEthernet) { transports.append(.ethernet) }
        // iOS reports tunnels as `.other`, named utun*/ipsec*/ppp*.
        let tunnel = path.availableInterfaces.contains { interface in
            interface.type == .other
                && ["utun", "ipsec", "ppp"].contains { interface.name.hasPrefix($0) }
        }
        if tunnel {
            transports.append(.vpn)
        } else if path.usesInterfaceType(.other) || path.usesInterfaceType(.loopback) {
            transports.append(.other)
        }
        return transports
    }

    /// FNV-1a over the interfaces the path may use (preferred first) and its
    /// gateways: joining another Wi-Fi network changes the gateway, so the
    /// route changes even though the transport stays `.wifi`. 0 = unknown.
    private static func pathId(of path: NWPath) -> Int64 {
        let parts = path.availableInterfaces.map { "\($0.name)#\($0.index)" }
            + path.gateways.map { "\($0)" }
        guard !parts.isEmpty else { return 0 }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in parts.joined(separator: "|").utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        return hash == 0 ? 1 : Int64(bitPattern: hash)
    }

    private static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return max(0, seconds * 1_000 + attoseconds / 1_000_000_000_000_000)
    }
}
