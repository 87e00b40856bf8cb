// TetherPlatformAdapter.swift: the iOS shell around TetherPlatformCore.
//
// It only converts what iOS reports into plain values and calls the core,
// which makes every decision (../core/TetherPlatformCore.swift):
//
// - NWPathMonitor's path -> PathFacts;
// - UIApplication didEnterBackground / willEnterForeground -> background /
//   foreground, timed on ContinuousClock (monotonic, keeps counting while the
//   device sleeps).
//
// Neither file is compiled on the project's machines (no Swift toolchain):
// see crates/ffi/README.md for what is and is not verified.
// Requires iOS 16 / macOS 13 (ContinuousClock) and the generated `Tether`
// module (crates/ffi/generate.sh swift).

import Foundation
import Network
import Tether
#if canImport(UIKit)
import UIKit
#endif

public final class TetherPlatformAdapter: @unchecked Sendable {
    private let monitor = NWPathMonitor()
    /// Serial: the core is used only on this queue.
    private let queue = DispatchQueue(label: "tether.platform-adapter")
    private let core: TetherPlatformCore
    private var observers: [NSObjectProtocol] = []

    public init(handle: NetworkEventHandle) {
        let clock = ContinuousClock()
        let origin = clock.now
        core = TetherPlatformCore(
            handle: handle,
            clock: { Self.milliseconds(clock.now - origin) },
            log: { message in NSLog("tether: %@", message) })
    }

    /// Starts monitoring. Call once, early, from the main thread (the first
    /// path update comes at once and tells the node where it stands).
    public func start() {
        core.start()
        monitor.pathUpdateHandler = { [weak self] path in self?.core.pathChanged(Self.facts(path)) }
        monitor.start(queue: queue)
        #if canImport(UIKit)
        let center = NotificationCenter.default
        observers = [
            center.addObserver(
                forName: UIApplication.didEnterBackgroundNotification, object: nil, queue: nil
            ) { [weak self] _ in self?.queue.async { self?.core.enteredBackground() } },
            center.addObserver(
                forName: UIApplication.willEnterForegroundNotification, object: nil, queue: nil
            ) { [weak self] _ in self?.queue.async { self?.core.enteredForeground() } },
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
        queue.async { [core] in core.stop() }
    }

    private static func facts(_ path: NWPath) -> PathFacts {
        var facts: PathFacts
        switch path.status {
        case .satisfied: facts = PathFacts(status: .satisfied)
        case .unsatisfied: facts = PathFacts(status: .unsatisfied)
        case .requiresConnection: facts = PathFacts(status: .requiresConnection)
        @unknown default: facts = PathFacts(status: .requiresConnection)
        }
        facts.usesWifi = path.usesInterfaceType(.wifi)
        facts.usesCellular = path.usesInterfaceType(.cellular)
        facts.usesWiredEthernet = path.usesInterfaceType(.wiredEthernet)
        facts.usesOther = path.usesInterfaceType(.other)
        facts.usesLoopback = path.usesInterfaceType(.loopback)
        facts.isExpensive = path.isExpensive
        facts.isConstrained = path.isConstrained
        facts.interfaces = path.availableInterfaces.map {
            InterfaceFacts(name: $0.name, index: $0.index, isOther: $0.type == .other)
        }
        facts.gateways = path.gateways.map { "\($0)" }
        return facts
    }

    private static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return max(0, seconds * 1_000 + attoseconds / 1_000_000_000_000_000)
    }
}
