import AssentCore
import Foundation

/// How many preferences of one topic are in one state now (a lapsed grant counts as expired).
public struct StateCount: Sendable, Equatable {
    public var topicKey: String
    public var state: PreferenceState
    public var count: Int

    public init(topicKey: String, state: PreferenceState, count: Int) {
        self.topicKey = topicKey
        self.state = state
        self.count = count
    }
}

/// Opt-ins (granted or confirmed) and opt-outs (withdrawn) of one source in one week.
public struct ChangeCount: Sendable, Equatable {
    /// Monday 00:00 UTC of the week.
    public var week: Date
    public var source: ConsentSource
    public var optIns: Int
    public var optOuts: Int

    public init(week: Date, source: ConsentSource, optIns: Int, optOuts: Int) {
        self.week = week
        self.source = source
        self.optIns = optIns
        self.optOuts = optOuts
    }
}

/// A double opt-in request and what followed it.
public struct ConfirmationOutcome: Sendable, Equatable {
    public var topicKey: String
    public var requestedAt: Date
    /// When it was confirmed; nil when it was not (yet).
    public var confirmedAt: Date?

    public init(topicKey: String, requestedAt: Date, confirmedAt: Date?) {
        self.topicKey = topicKey
        self.requestedAt = requestedAt
        self.confirmedAt = confirmedAt
    }
}

/// Grants of one topic lapsing within 30, 60 and 90 days.
public struct ExpiringCount: Sendable, Equatable {
    public var topicKey: String
    public var within30: Int
    public var within60: Int
    public var within90: Int

    public init(topicKey: String, within30: Int, within60: Int, within90: Int) {
        self.topicKey = topicKey
        self.within30 = within30
        self.within60 = within60
        self.within90 = within90
    }
}

/// The double opt-in funnel of one topic (or all) over a period.
public struct FunnelRow: Sendable, Equatable {
    public var topicKey: String?
    public var requested: Int
    public var confirmed: Int
    /// Not confirmed, and the link's lifetime is over.
    public var expiredUnconfirmed: Int
    /// Not confirmed yet, and the link still works.
    public var open: Int
    /// Median time from request to confirmation, in seconds; nil with no confirmations.
    public var medianSecondsToConfirm: Double?

    public var confirmationRate: Double { requested == 0 ? 0 : Double(confirmed) / Double(requested) }

    public init(topicKey: String?, requested: Int, confirmed: Int, expiredUnconfirmed: Int, open: Int, medianSecondsToConfirm: Double?) {
        self.topicKey = topicKey
        self.requested = requested
        self.confirmed = confirmed
        self.expiredUnconfirmed = expiredUnconfirmed
        self.open = open
        self.medianSecondsToConfirm = medianSecondsToConfirm
    }
}

extension Ledger {
    /// Monday 00:00 UTC of the week holding `date`.
    public static func weekStart(_ date: Date) -> Date {
        let days = (date.timeIntervalSince1970 / 86_400).rounded(.down)
        // 1970-01-01 was a Thursday: Monday is 3 days earlier.
        let monday = days - (days + 3).truncatingRemainder(dividingBy: 7)
        return Date(timeIntervalSince1970: monday * 86_400)
    }

    /// Per topic (active ones, and retired ones that still hold rows), how many
    /// contacts are in each state now; `none` counts contacts never asked.
    public func stateReport() async throws -> [StateCount] {
        let at = now
        let rows = try await store.stateCounts(now: at)
        let contacts = try await store.contactCount()
        var result: [StateCount] = []
        for topic in try await store.topics(includeRetired: true) {
            let mine = rows.filter { $0.topicKey == topic.key }
            if !topic.isActive && mine.isEmpty { continue }
            let counted = mine.filter { $0.state != .none }.map(\.count).reduce(0, +)
            for state in PreferenceState.allCases {
                let n = state == .none ? max(0, contacts - counted) : mine.first { $0.state == state }?.count ?? 0
                result.append(StateCount(topicKey: topic.key, state: state, count: n))
            }
        }
        return result
    }

    /// Opt-ins and opt-outs per week and source between two moments (weeks start on Monday, UTC).
    public func changeReport(from: Date, to: Date) async throws -> [ChangeCount] {
        guard from < to else { throw DomainError.invalid(field: "from", "must be before 'to'") }
        guard to.timeIntervalSince(from) <= 3 * 366 * 86_400 else { throw DomainError.invalid(field: "to", "a report covers at most three years") }
        return try await store.changeCounts(from: from, to: to, weekStart: Self.weekStart(from))
    }

    /// Every double opt-in requested in the period, per topic and in total.
    public func funnelReport(from: Date, to: Date) async throws -> [FunnelRow] {
        guard from < to else { throw DomainError.invalid(field: "from", "must be before 'to'") }
        let at = now
        let outcomes = try await store.confirmationOutcomes(from: from, to: to)
        func row(_ topic: String?, _ list: [ConfirmationOutcome]) -> FunnelRow {
            let durations = list.compactMap { o in o.confirmedAt.map { $0.timeIntervalSince(o.requestedAt) } }.sorted()
            let median: Double? = durations.isEmpty ? nil
                : durations.count % 2 == 1 ? durations[durations.count / 2] : (durations[durations.count / 2 - 1] + durations[durations.count / 2]) / 2
            let unconfirmed = list.filter { $0.confirmedAt == nil }
            let expired = unconfirmed.filter { $0.requestedAt.addingTimeInterval(confirmationLifetime) <= at }.count
            return FunnelRow(topicKey: topic, requested: list.count, confirmed: durations.count, expiredUnconfirmed: expired,
                             open: unconfirmed.count - expired, medianSecondsToConfirm: median)
        }
        var rows = Dictionary(grouping: outcomes, by: \.topicKey).sorted { $0.key < $1.key }.map { row($0.key, $0.value) }
        rows.append(row(nil, outcomes))
        return rows
    }

    /// Per topic, live grants lapsing within 30, 60 and 90 days from now.
    public func expiringReport() async throws -> [ExpiringCount] {
        try await store.expiringCounts(now: now)
    }
}
