import AssentStore
import Foundation
import Logging
import ServiceLifecycle

/// The ledger's timed work, every `interval`: records consent expiry as it
/// falls due (`expired`, source `system`), queues re-permission emails for
/// grants entering their topic's window, and measures each segment once a
/// day. Runs in every `assent serve`; several instances may run it at once,
/// and a restart picks up whatever fell due meanwhile: each job is idempotent
/// (an expiry is recorded once, a grant is asked once, a day has one size).
public struct Scheduler: Service {
    let ledger: Ledger
    let interval: Duration
    let logger: Logger
    /// How often every chain is verified (the latest run is at `/metrics`); nil = never.
    public var verifyEvery: Duration?

    public init(ledger: Ledger, interval: Duration = .seconds(60), logger: Logger = Logger(label: "assent.scheduler")) {
        self.ledger = ledger
        self.interval = interval
        self.logger = logger
    }

    /// One pass of every job; what each did.
    @discardableResult
    public func runOnce() async -> (expired: Int, repermissionsQueued: Int, segmentsMeasured: Int) {
        let expired = await drain("expiry") { try await ledger.expireDue(limit: 500) }
        let queued = await drain("re-permission") { try await ledger.queueRepermissions(limit: 200) }
        var measured = 0
        do { measured = try await ledger.measureSegmentsDue() } catch { reportFailure("segment measurement failed", error) }
        if expired > 0 { logger.info("recorded \(expired) expired consent(s)") }
        if queued > 0 { logger.info("queued \(queued) re-permission email(s)") }
        if measured > 0 { logger.info("measured \(measured) segment(s)") }
        return (expired, queued, measured)
    }

    /// Verifies every chain when the latest recorded run (by any instance or
    /// `assent verify`) is older than `verifyEvery`; returns the run, if one was made.
    @discardableResult
    public func verifyIfDue() async -> VerifyRun? {
        guard let every = verifyEvery else { return nil }
        do {
            if let last = try await ledger.store.lastVerifyRun(),
               ledger.environment.now().timeIntervalSince(last.finishedAt) < Double(every.components.seconds) { return nil }
            let (report, run) = try await ledger.verifyAndRecord(origin: "schedule")
            if report.isIntact {
                logger.info("verified \(run.events) events of \(run.contacts) contacts in \(String(format: "%.1f", run.seconds)) s: every chain intact")
            } else {
                logger.critical("verification FAILED: \(run.breaks) of \(run.contacts) contacts have a broken chain; run 'assent verify' for the list")
            }
            return run
        } catch {
            reportFailure("verification could not run", error)
            return nil
        }
    }

    /// Runs a batch job until a batch does nothing.
    private func drain(_ name: String, _ batch: () async throws -> Int) async -> Int {
        var total = 0
        do {
            while true {
                let done = try await batch()
                total += done
                if done == 0 || Task.isCancelled { break }
            }
        } catch {
            reportFailure("\(name) run failed", error)
        }
        return total
    }

    /// A job's failure, logged as an error unless the server is stopping (which cancels the job
    /// under way: a failed start-up would otherwise bury its own reason under these).
    private func reportFailure(_ message: String, _ error: any Error) {
        if Task.isCancelled {
            logger.debug("\(message) as the server stopped: \(error)")
        } else {
            logger.error("\(message): \(error)")
        }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            // Verification reads every chain (tens of seconds on a large ledger): its own loop, so expiry never waits for it.
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    while !Task.isCancelled {
                        await runOnce()
                        try? await Task.sleep(for: interval)
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        await verifyIfDue()
                        try? await Task.sleep(for: interval)
                    }
                }
            }
        }
    }
}
