import AssentStore
import Logging
import ServiceLifecycle

/// Records consent expiry as it falls due: every `interval` it asks the
/// ledger for grants past their lifetime and records `expired` (source
/// `system`). Runs in every `assent serve`; several instances may run it at
/// once, and a restart picks up whatever fell due meanwhile: `expireDue` is
/// idempotent.
public struct ExpiryWorker: Service {
    let ledger: Ledger
    let interval: Duration
    let logger: Logger

    public init(ledger: Ledger, interval: Duration = .seconds(60), logger: Logger = Logger(label: "assent.expiry")) {
        self.ledger = ledger
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    var total = 0
                    while true {
                        let recorded = try await ledger.expireDue(limit: 500)
                        total += recorded
                        if recorded < 500 { break }
                    }
                    if total > 0 { logger.info("recorded \(total) expired consent(s)") }
                } catch {
                    logger.error("expiry run failed: \(error)")
                }
                try? await Task.sleep(for: interval)
            }
        }
    }
}
