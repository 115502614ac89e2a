import Foundation

/// The projected current state of one contact for one topic.
public struct Preference: Equatable, Sendable {
    public var contactID: UUID
    public var topicKey: String
    public var state: PreferenceState
    /// When the person made the change that led to this state.
    public var since: Date
    public var expiresAt: Date?
    /// The sequence number of the event that set this state.
    public var seq: Int64

    public init(contactID: UUID, topicKey: String, state: PreferenceState, since: Date, expiresAt: Date?, seq: Int64) {
        self.contactID = contactID
        self.topicKey = topicKey
        self.state = state
        self.since = since
        self.expiresAt = expiresAt
        self.seq = seq
    }

    /// Only a grant that has not lapsed allows sending.
    public func allowsSending(at now: Date) -> Bool {
        state == .granted && (expiresAt.map { $0 > now } ?? true)
    }

    /// The state a reader should see at `now`: a lapsed grant reads `expired`
    /// even before the scheduler has written its `expired` event.
    public func effectiveState(at now: Date) -> PreferenceState {
        if state == .granted, let expiresAt, expiresAt <= now { return .expired }
        return state
    }
}

/// Rebuilds preferences from events: the projection must always equal this.
public enum Projection {
    public static func replay(_ events: some Sequence<ConsentEvent>) -> [String: Preference] {
        var result: [String: Preference] = [:]
        for event in events {
            apply(event, to: &result)
        }
        return result
    }

    public static func apply(_ event: ConsentEvent, to preferences: inout [String: Preference]) {
        preferences[event.topicKey] = Preference(
            contactID: event.contactID, topicKey: event.topicKey, state: event.toState,
            since: event.occurredAt, expiresAt: event.toState == .granted ? event.expiresAt : nil, seq: event.seq
        )
    }
}
