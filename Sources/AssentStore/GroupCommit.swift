import Foundation

/// Group commit: ledger commits that arrive while one transaction is being
/// written wait, and are then written together in the next transaction, each
/// in a savepoint of its own. One durable commit (one fsync) then acknowledges
/// them all, so that concurrent writers are no longer capped at one fsync
/// each. Each commit still succeeds or fails on its own: a commit whose head
/// moved rolls back to its savepoint and only its caller sees the error.
///
/// No caller is answered before the transaction holding its commit has
/// committed, so an acknowledged write is as durable as it was without
/// grouping. Nothing waits on a timer: the first writer of an idle store
/// commits at once, alone; the group forms while it is writing.
public final class GroupCommitter: @unchecked Sendable {
    /// Writes the commits in one transaction, each in a savepoint, and gives
    /// back each one's error (nil: written). Throwing fails them all (the
    /// transaction did not commit).
    public typealias Writer = @Sendable ([LedgerCommit]) async throws -> [(any Error)?]

    private let lock = NSLock()
    private var pending: [(commit: LedgerCommit, waiter: CheckedContinuation<Void, any Error>)] = []
    private var writing = false
    private let maxGroup: Int
    /// Transactions written and commits in them, since start (for tests and metrics).
    private var counts = (transactions: 0, commits: 0)

    public init(maxGroup: Int = 256) {
        precondition(maxGroup > 0, "a group holds at least one commit")
        self.maxGroup = maxGroup
    }

    /// Returns once `commit` is durably written, or throws its own error.
    /// Every caller of one committer passes the same `writer` (a store's);
    /// the caller that finds the committer idle writes its group and any
    /// that gather meanwhile.
    public func commit(_ commit: LedgerCommit, writer: @escaping Writer) async throws {
        try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<Void, any Error>) in
            let lead = lock.withLock { () -> Bool in
                pending.append((commit, waiter))
                if writing { return false }
                writing = true
                return true
            }
            if lead { Task { await self.drain(writer) } }
        }
    }

    /// Commits waiting for the next transaction.
    public var pendingCount: Int { lock.withLock { pending.count } }

    /// How many transactions carried how many commits so far.
    public var statistics: (transactions: Int, commits: Int) { lock.withLock { counts } }

    private func drain(_ writer: Writer) async {
        while true {
            let group = lock.withLock { () -> [(commit: LedgerCommit, waiter: CheckedContinuation<Void, any Error>)] in
                if pending.isEmpty {
                    writing = false
                    return []
                }
                let n = min(pending.count, maxGroup)
                let taken = Array(pending.prefix(n))
                pending.removeFirst(n)
                counts.transactions += 1
                counts.commits += n
                return taken
            }
            if group.isEmpty { return }
            do {
                let errors = try await writer(group.map(\.commit))
                precondition(errors.count == group.count, "the writer answers for every commit")
                for (item, error) in zip(group, errors) {
                    if let error { item.waiter.resume(throwing: error) } else { item.waiter.resume() }
                }
            } catch {
                for item in group { item.waiter.resume(throwing: error) }
            }
        }
    }
}

extension LedgerStore {
    public func refreshStatistics() async throws {}

    /// One read per core, at most four: a batch must not take every connection of a pool (SQLite's
    /// has five readers) from the other requests. In-process reads share the cores, and more of
    /// them than cores made each read's page cache keep less of what its lookups share.
    public var batchCheckReads: Int { min(4, max(1, ProcessInfo.processInfo.activeProcessorCount)) }

    /// Each commit in a transaction of its own: for stores without a cheaper way (the memory store).
    public func commit(group: [LedgerCommit]) async throws -> [(any Error)?] {
        var errors: [(any Error)?] = []
        for commit in group {
            do {
                try await self.commit(commit)
                errors.append(nil)
            } catch {
                errors.append(error)
            }
        }
        return errors
    }
}
