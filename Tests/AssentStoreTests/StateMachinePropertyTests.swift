import AssentCore
import AssentStore
import AssentTestSupport
import Foundation
import PropertyBased
import Testing

/// Random command sequences through the one write path, on every store:
/// opt-ins, opt-outs, double opt-in requests and confirmations, expiries and
/// renewals from every source (allowed or not), time passing, the expiry
/// sweep, objections and retired topics. After every sequence:
/// - the projection equals a replay of the events (computed here, and by `verify`);
/// - `granted` only ever follows an explicit opt-in, renewal or confirmation of a pending request;
/// - a refused command appends nothing;
/// - every chain verifies, and sequence numbers have no gaps.
@Suite struct StateMachinePropertyTests {
    static let topics = ["news", "events", "offers"]
    static let contacts = 3

    /// One command, decoded from a number so that sequences shrink as plain arrays.
    enum Step: CustomStringConvertible {
        case change(contact: Int, topics: [String], intent: ConsentIntent, source: ConsentSource, requireConfirmation: Bool)
        case advance(days: Int)
        case sweep
        case object(contact: Int)
        case retire(topic: String)

        init(_ v: Int) {
            let contact = (v / 20) % StateMachinePropertyTests.contacts
            switch v % 20 {
            case 0..<14:
                let mask = (v / 60) % 7 + 1
                self = .change(contact: contact, topics: StateMachinePropertyTests.topics.enumerated().filter { mask & (1 << $0.offset) != 0 }.map(\.element),
                               intent: ConsentIntent.allCases[(v / 420) % ConsentIntent.allCases.count],
                               source: ConsentSource.allCases[(v / 2_940) % ConsentSource.allCases.count], requireConfirmation: (v / 26_460) % 2 == 1)
            case 14..<17: self = .advance(days: (v / 20) % 400 + 1)
            case 17: self = .sweep
            case 18: self = .object(contact: contact)
            default: self = (v / 20) % 4 == 0 ? .retire(topic: StateMachinePropertyTests.topics[(v / 80) % 3]) : .sweep
            }
        }

        var description: String {
            switch self {
            case let .change(contact, topics, intent, source, confirm): "change(c\(contact), \(topics), \(intent), \(source.rawValue)\(confirm ? ", confirm" : ""))"
            case let .advance(days): "advance(\(days)d)"
            case .sweep: "sweep"
            case let .object(contact): "object(c\(contact))"
            case let .retire(topic): "retire(\(topic))"
            }
        }
    }

    static func actor(_ source: ConsentSource) -> Actor {
        switch source {
        case .system: .system
        case .staff: .staff("staff-1")
        case .api, .import: .apiKey("key-1")
        default: .subject
        }
    }

    @Test(arguments: StoreKind.available)
    func randomCommandSequencesKeepTheLedgerSound(_ kind: StoreKind) async throws {
        let runs = kind == .memory ? 200 : 40
        var steps = 0, events = 0, refused = 0
        await propertyCheck(count: runs, input: Gen.int(in: 0...999_999).array(of: 1...40)) { numbers in
            let plan = numbers.map(Step.init)
            let clock = TestClock(Date(timeIntervalSince1970: 1_790_000_000))
            let ledger = try await kind.makeLedger(now: { clock.now })
            for (key, doubleOptIn, lifetime) in [("news", false, nil), ("events", true, 365), ("offers", false, 30)] as [(String, Bool, Int?)] {
                _ = try await ledger.createTopic(Topic(key: key, title: key.capitalized, requiresDoubleOptIn: doubleOptIn, consentLifetimeDays: lifetime,
                                                       createdAt: clock.now), noticeText: "About \(key).")
            }
            var people: [Contact] = []
            for i in 0..<Self.contacts {
                people.append(try await ledger.createContact(email: EmailAddress("person\(i)@example.com"), name: nil, externalID: nil, locale: nil))
            }
            for step in plan {
                steps += 1
                switch step {
                case let .change(contact, topics, intent, source, requireConfirmation):
                    let id = people[contact].id
                    let before = try await ledger.store.events(contactID: id, beforeSeq: nil, limit: 100_000).count
                    do {
                        let result = try await ledger.recordChange(ChangeRequest(
                            contactID: id, changes: topics.map { TopicChange(topicKey: $0, intent: intent) }, source: source,
                            channel: source == .staff ? .phone : nil, actor: Self.actor(source),
                            evidence: Evidence(personal: PersonalEvidence(note: source == .staff ? "Said so on the phone." : nil)),
                            requireConfirmation: requireConfirmation))
                        events += result.events.count
                        if ![.optIn, .confirm, .renew].contains(intent) {
                            #expect(!result.events.contains { $0.toState == .granted }, "\(step) granted: \(plan)")
                        }
                    } catch is DomainError {
                        refused += 1
                        let after = try await ledger.store.events(contactID: id, beforeSeq: nil, limit: 100_000).count
                        #expect(after == before, "a refused \(step) appended \(after - before) events: \(plan)")
                    }
                case let .advance(days):
                    clock.now = clock.now.addingTimeInterval(Double(days) * 86_400)
                case .sweep:
                    events += try await ledger.expireDue(limit: 500)
                case let .object(contact):
                    do {
                        events += try await ledger.objectToMarketing(people[contact].id, source: .api, actor: .apiKey("key-1"),
                                                                     evidence: Evidence(personal: PersonalEvidence(note: "Wrote to object."))).events.count
                    } catch is DomainError {
                        refused += 1
                    }
                case let .retire(topic):
                    _ = try? await ledger.retireTopic(key: topic)
                }
            }
            try await Self.checkSound(ledger, people, plan)
        }
        print("state machine (\(kind)): \(runs) random sequences, \(steps) commands, \(events) events recorded, \(refused) commands refused")
    }

    /// Replay equals projection; granted only after an explicit yes; gap-free chains that verify.
    static func checkSound(_ ledger: Ledger, _ people: [Contact], _ plan: [Step]) async throws {
        for person in people {
            let history = Array(try await ledger.store.events(contactID: person.id, beforeSeq: nil, limit: 100_000).reversed())
            #expect(history.map(\.seq) == (0..<history.count).map { Int64($0 + 1) }, "gaps: \(plan)")
            var replayed: [String: ConsentEvent] = [:]
            for event in history {
                // A grant past its lifetime reads as expired before the sweep records it (the sweep's
                // own event, dated the moment it lapsed, is the move from granted to expired).
                let last = replayed[event.topicKey]
                let lapsed = last?.toState == .granted && last?.expiresAt.map { $0 <= event.occurredAt } == true && event.action != .expired
                let previous: PreferenceState = lapsed ? .expired : last?.toState ?? .none
                #expect(event.fromState == previous, "event \(event.seq) starts from \(event.fromState), the topic was \(previous): \(plan)")
                if event.toState == .granted {
                    #expect(event.source != .system, "the system granted: \(plan)")
                    #expect(event.action == .granted || (event.action == .confirmed && previous == .pending),
                            "granted by \(event.action) from \(previous): \(plan)")
                }
                replayed[event.topicKey] = event
            }
            let projection = Dictionary(uniqueKeysWithValues: try await ledger.store.preferences(contactID: person.id).map { ($0.topicKey, $0) })
            #expect(Set(projection.keys) == Set(replayed.keys), "projection topics \(projection.keys.sorted()) vs events \(replayed.keys.sorted()): \(plan)")
            for (topic, last) in replayed {
                let stored = projection[topic]
                #expect(stored?.state == last.toState && stored?.seq == last.seq && stored?.expiresAt == last.expiresAt,
                        "\(topic): projection \(String(describing: stored)) vs last event \(last.toState) #\(last.seq): \(plan)")
            }
        }
        let report = try await ledger.verify()
        #expect(report.isIntact, "\(report.breaks): \(plan)")
    }
}
