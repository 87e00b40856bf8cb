// TetherPlatformCore.swift: every decision of the iOS adapter, in plain
// Swift (Foundation and the generated `Tether` module only; no Network, no
// UIKit), so that it can be unit-tested without a device.
//
// - Snapshot building: what NWPath reported (as `PathFacts`) ->
//   availability, transports, expensive, constrained, path id.
// - Material-change filter and sequence numbering: a snapshot only when the
//   path changed, numbered 1, 2, 3, ...
// - Lifecycle: a repeated background is not sent again; the background time
//   comes from an injected monotonic clock (ContinuousClock in the shell,
//   which keeps counting while the device sleeps).
// - Ordered delivery: one AsyncStream, one consumer task, one `submit` at a
//   time; `TetherError.ShutDown` ends the consumer.
//
// It mirrors ../../kotlin/core/TetherPlatformCore.kt decision for decision;
// the Kotlin one is compiled and tested on every CI run, this one is NOT
// compiled anywhere (no Swift toolchain on the project's machines): see
// crates/ffi/README.md. The NWPathMonitor / UIApplication shell is
// ../ios/TetherPlatformAdapter.swift.

import Foundation
import Tether

/// One network interface of a path, as NWPath lists it.
public struct InterfaceFacts: Equatable, Sendable {
    public var name: String
    public var index: Int
    /// `NWInterface.InterfaceType.other` (tunnels report themselves so).
    public var isOther: Bool

    public init(name: String, index: Int, isOther: Bool) {
        self.name = name
        self.index = index
        self.isOther = isOther
    }
}

/// What `NWPath` says, in plain values (filled by the shell).
public struct PathFacts: Equatable, Sendable {
    public enum Status: Sendable { case satisfied, unsatisfied, requiresConnection }

    public var status: Status
    public var usesWifi = false
    public var usesCellular = false
    public var usesWiredEthernet = false
    public var usesOther = false
    public var usesLoopback = false
    public var isExpensive = false
    public var isConstrained = false
    /// `availableInterfaces`, preferred first.
    public var interfaces: [InterfaceFacts] = []
    /// `gateways`, described.
    public var gateways: [String] = []

    public init(status: Status) {
        self.status = status
    }
}

/// What makes two paths the same for recovery purposes.
public struct PlatformPath: Equatable, Sendable {
    public var availability: Availability
    public var transports: [Transport]
    public var isExpensive: Bool
    public var isConstrained: Bool
    public var pathId: Int64
}

/// Snapshot building.
public enum PathBuilder {
    public static func path(_ facts: PathFacts) -> PlatformPath {
        let availability: Availability
        switch facts.status {
        case .satisfied: availability = .available
        case .unsatisfied: availability = .unavailable
        case .requiresConnection: availability = .unknown
        }
        return PlatformPath(
            availability: availability,
            transports: transports(facts),
            isExpensive: facts.isExpensive,
            isConstrained: facts.isConstrained,
            pathId: pathId(facts))
    }

    static func transports(_ facts: PathFacts) -> [Transport] {
        var transports: [Transport] = []
        if facts.usesWifi { transports.append(.wifi) }
        if facts.usesCellular { transports.append(.cellular) }
        if facts.usesWiredEthernet { transports.append(.ethernet) }
        // iOS reports tunnels as `.other`, named utun*/ipsec*/ppp*.
        let tunnel = facts.interfaces.contains { interface in
            interface.isOther && ["utun", "ipsec", "ppp"].contains { interface.name.hasPrefix($0) }
        }
        if tunnel {
            transports.append(.vpn)
        } else if facts.usesOther || facts.usesLoopback {
            transports.append(.other)
        }
        return transports
    }

    /// FNV-1a over the interfaces the path may use (preferred first) and its
    /// gateways: joining another Wi-Fi network changes the gateway, so the
    /// route changes even though the transport stays `.wifi`. 0 = unknown
    /// (no interface); never 0 otherwise.
    public static func pathId(_ facts: PathFacts) -> Int64 {
        let parts = facts.interfaces.map { "\($0.name)#\($0.index)" } + facts.gateways
        guard !parts.isEmpty else { return 0 }
        let hash = fnv1a64(parts.joined(separator: "|"))
        return hash == 0 ? 1 : Int64(bitPattern: hash)
    }

    /// 64-bit FNV-1a of the UTF-8 bytes of `text`.
    public static func fnv1a64(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        return hash
    }
}

/// Material-change filter and sequence numbering. Not thread-safe.
public struct PathTracker {
    private var sequence: Int64 = 0
    private var last: PlatformPath?

    public init() {}

    /// The snapshot to send for `path`, or nil when nothing material changed.
    public mutating func update(_ path: PlatformPath) -> NetworkSnapshot? {
        guard path != last else { return nil }  // the platform repeats itself
        last = path
        sequence += 1
        return NetworkSnapshot(
            sequence: sequence,
            availability: path.availability,
            transports: path.transports,
            isExpensive: path.isExpensive,
            isConstrained: path.isConstrained,
            pathId: path.pathId)
    }
}

/// Background and foreground with the background time. `clock`: monotonic
/// milliseconds that keep counting while the device sleeps. Not thread-safe.
public struct LifecycleTracker {
    private let clock: () -> Int64
    private var backgroundSince: Int64?

    public init(clock: @escaping () -> Int64) {
        self.clock = clock
    }

    /// The state to send on entering the background, or nil when already there.
    public mutating func enteredBackground() -> AppLifecycleState? {
        guard backgroundSince == nil else { return nil }
        backgroundSince = clock()
        return .background
    }

    /// The state to send on entering the foreground.
    public mutating func enteredForeground() -> AppLifecycleState {
        let since = backgroundSince
        backgroundSince = nil
        let duration = since.map { max(0, clock() - $0) } ?? 0
        return .foreground(backgroundDurationMs: duration)
    }
}

/// Everything the iOS adapter decides. Not thread-safe: call it from one
/// serial queue (the shell's), in the order the platform reported.
public final class TetherPlatformCore: @unchecked Sendable {
    private var paths = PathTracker()
    private var lifecycle: LifecycleTracker
    private let submit: @Sendable (NetworkEvent) async throws -> Void
    private let log: @Sendable (String) -> Void
    private let events: AsyncStream<NetworkEvent>
    private let continuation: AsyncStream<NetworkEvent>.Continuation
    private var consumer: Task<Void, Never>?

    public init(
        submit: @escaping @Sendable (NetworkEvent) async throws -> Void,
        clock: @escaping () -> Int64,
        log: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.submit = submit
        self.log = log
        lifecycle = LifecycleTracker(clock: clock)
        (events, continuation) = AsyncStream.makeStream(
            of: NetworkEvent.self, bufferingPolicy: .unbounded)
    }

    /// Delivers to `handle.submit`.
    public convenience init(
        handle: NetworkEventHandle, clock: @escaping () -> Int64,
        log: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.init(submit: { event in try await handle.submit(event: event) }, clock: clock, log: log)
    }

    /// Starts the one consumer. Call once.
    public func start() {
        let events = self.events
        let submit = self.submit
        let log = self.log
        consumer = Task.detached {
            // One consumer, one submit at a time: the node sees the platform's order.
            for await event in events {
                do {
                    try await submit(event)
                } catch TetherError.ShutDown {
                    log("tether shut down: event delivery ends")
                    break  // the node is gone; nothing more to deliver
                } catch {
                    log("tether refused \(event): \(error)")
                }
            }
        }
    }

    /// No more events; those queued are still delivered.
    public func stop() {
        continuation.finish()
    }

    /// NWPathMonitor's `pathUpdateHandler`.
    public func pathChanged(_ facts: PathFacts) {
        guard let snapshot = paths.update(PathBuilder.path(facts)) else { return }
        continuation.yield(.networkPathChanged(snapshot: snapshot))
    }

    /// `didEnterBackgroundNotification`.
    public func enteredBackground() {
        guard let state = lifecycle.enteredBackground() else { return }
        continuation.yield(.appLifecycleChanged(state: state))
    }

    /// `willEnterForegroundNotification`.
    public func enteredForeground() {
        continuation.yield(.appLifecycleChanged(state: lifecycle.enteredForeground()))
    }
}
