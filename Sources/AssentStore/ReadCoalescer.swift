import Foundation

/// Coalesces concurrent point reads into batch reads, the way `GroupCommitter` coalesces writes.
/// While fewer than `width` reads are out, a request reads alone, at once: an idle store answers
/// as if there were no coalescer, and nothing ever waits on a timer. Once `width` reads are out,
/// requests queue; each read that finishes hands what has queued (up to `maxBatch`) to the first
/// of those waiters, which reads them all in one batch and answers the others.
///
/// A store whose every read costs a round trip and a fixed per-query price (PostgreSQL: a
/// connection lease, bind, send, parse of the reply, on both sides) then pays it once per batch.
///
/// Inlinable, so that the store using it gets code made for its keys and values: a generic class's
/// methods called from another module run unspecialised, looking up its types' metadata at run time.
public final class ReadCoalescer<Key: Sendable, Value: Sendable>: @unchecked Sendable {
    /// Reads the keys and gives back one value per key, in the keys' order.
    public typealias BatchRead = @Sendable ([Key]) async throws -> [Value]

    @usableFromInline enum Outcome: Sendable {
        case value(Value)
        case failed(any Error)
        /// Read these waiters' keys along with your own, and answer them.
        case lead([Waiter])
    }

    @usableFromInline struct Waiter: Sendable {
        @usableFromInline let key: Key
        @usableFromInline let continuation: CheckedContinuation<Outcome, Never>

        @inlinable init(key: Key, continuation: CheckedContinuation<Outcome, Never>) {
            self.key = key
            self.continuation = continuation
        }
    }

    // Internal only so that the inlinable methods can reach them: `out`, `queue` and `counts` are
    // touched under `lock` alone, and only `read` calls `lead` (after taking a slot).
    @usableFromInline let lock = NSLock()
    @usableFromInline var out = 0
    @usableFromInline var queue: [Waiter] = []
    @usableFromInline var counts = (reads: 0, keys: 0)
    @usableFromInline let width: Int
    @usableFromInline let maxBatch: Int
    @usableFromInline let batchRead: BatchRead

    public init(width: Int, maxBatch: Int = 128, read: @escaping BatchRead) {
        precondition(width > 0 && maxBatch > 0, "a coalescer runs at least one read of at least one key")
        self.width = width
        self.maxBatch = maxBatch
        self.batchRead = read
    }

    /// How many reads carried how many keys so far (for tests and metrics).
    public var statistics: (reads: Int, keys: Int) { lock.withLock { counts } }

    /// Reads waiting for a batch.
    public var queuedCount: Int { lock.withLock { queue.count } }

    @inlinable
    public func read(_ key: Key) async throws -> Value {
        if lock.withLock({ () -> Bool in
            guard out < width else { return false }
            out += 1
            return true
        }) {
            return try await lead(key, with: [])
        }
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
            // Decided again under the lock that queues: a read may have finished since the check above.
            let alone = lock.withLock { () -> Bool in
                if out < width {
                    out += 1
                    return true
                }
                queue.append(Waiter(key: key, continuation: continuation))
                return false
            }
            if alone { continuation.resume(returning: .lead([])) }
        }
        switch outcome {
        case .value(let value): return value
        case .failed(let error): throw error
        case .lead(let others): return try await lead(key, with: others)
        }
    }

    /// Reads `key` with the waiters', answers them, and passes the read's slot on.
    @inlinable
    func lead(_ key: Key, with others: [Waiter]) async throws -> Value {
        let keys = [key] + others.map(\.key)
        let values: [Value]
        do {
            // Others' reads run in a task of their own: in the leader's, the leader's cancellation
            // (its client gone, a shutdown) would fail every read of the batch.
            values = try await others.isEmpty ? batchRead(keys) : Task { [batchRead] in try await batchRead(keys) }.value
            guard values.count == keys.count else {
                throw CoalescedReadError.miscounted(keys: keys.count, values: values.count)
            }
        } catch {
            for waiter in others { waiter.continuation.resume(returning: .failed(error)) }
            handOff(read: keys.count)
            throw error
        }
        for (waiter, value) in zip(others, values.dropFirst()) { waiter.continuation.resume(returning: .value(value)) }
        handOff(read: keys.count)
        return values[0]
    }

    @inlinable
    func handOff(read keys: Int) {
        let next = lock.withLock { () -> [Waiter] in
            counts.reads += 1
            counts.keys += keys
            guard !queue.isEmpty else {
                out -= 1
                return []
            }
            let taken = Array(queue.prefix(maxBatch))
            queue.removeFirst(taken.count)
            return taken
        }
        if let first = next.first { first.continuation.resume(returning: .lead(Array(next.dropFirst()))) }
    }
}

/// A batch read that did not give one value per key: a bug in the store, never the caller's.
public enum CoalescedReadError: Error, CustomStringConvertible {
    case miscounted(keys: Int, values: Int)

    public var description: String {
        switch self {
        case .miscounted(let keys, let values): "a batch read of \(keys) keys gave \(values) values"
        }
    }
}
