import Foundation

/// Values read from the store and kept for at most `maxAge` (a second by
/// default), for hot paths: every API request's key, every check's topic.
/// A change made by this process invalidates at once; one made elsewhere
/// (another instance, the command line) is seen within `maxAge`. A missing
/// value is remembered too, and the cache never holds more than `limit`
/// entries (it starts afresh when full), so random ids cannot grow it.
///
/// Inlinable, so that a module using it (the API's key look-up, on every request) gets code made for
/// its types: a generic class's methods called from another module run unspecialised, each call
/// looking up its types' metadata at run time.
public final class ShortLivedCache<Key: Hashable & Sendable, Value: Sendable>: @unchecked Sendable {
    // Internal only so that `value` can be inlinable: `entries` and `generation` are touched under `lock` alone.
    @usableFromInline let lock = NSLock()
    @usableFromInline var entries: [Key: (value: Value?, fetchedAt: Date)] = [:]
    /// Bumped by every invalidation, so that a read that began before one does not put its (older) answer back.
    @usableFromInline var generation = 0
    public let maxAge: TimeInterval
    public let limit: Int

    public init(maxAge: TimeInterval = 1, limit: Int = 10_000) {
        self.maxAge = maxAge
        self.limit = limit
    }

    @inlinable
    public func value(_ key: Key, fetch: () async throws -> Value?) async throws -> Value? {
        let now = Date()
        if let hit = lock.withLock({ entries[key] }), now.timeIntervalSince(hit.fetchedAt) < maxAge, now >= hit.fetchedAt {
            return hit.value
        }
        let started = lock.withLock { generation }
        let fresh = try await fetch()
        lock.withLock {
            guard generation == started else { return }
            if entries.count >= limit { entries.removeAll(keepingCapacity: true) }
            entries[key] = (fresh, now)
        }
        return fresh
    }

    public func invalidate(_ key: Key) {
        lock.withLock {
            generation += 1
            entries.removeValue(forKey: key)
        }
    }

    public func invalidateAll() {
        lock.withLock {
            generation += 1
            entries.removeAll()
        }
    }
}
