import AssentCore
import Foundation
import PropertyBased
import Testing

@Suite struct EmailAddressTests {
    @Test func normalisesCaseAndWhitespace() throws {
        #expect(try EmailAddress("  Ann.Lee@Example.COM ").value == "ann.lee@example.com")
    }

    @Test(arguments: ["", "ann", "ann@", "@example.com", "ann@example", "ann@@example.com", "a b@example.com",
                      "ann@exa_mple.com", ".ann@example.com", "ann..lee@example.com", "ann@-example.com", "ann\u{0}@example.com"])
    func rejectsMalformedAddresses(_ raw: String) {
        #expect(throws: DomainError.self) { try EmailAddress(raw) }
    }

    /// The rules as first written (splits over Strings), the specification the one-pass check must keep.
    static func reference(_ raw: String, field: String = "email") throws -> String {
        let trimmed = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty else { throw DomainError.invalid(field: field, "is required") }
        guard trimmed.utf8.count <= 254 else { throw DomainError.invalid(field: field, "must be at most 254 bytes") }
        let parts = trimmed.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw DomainError.invalid(field: field, "'\(raw)' is not an email address (expected local@domain)")
        }
        let local = parts[0], domain = parts[1]
        guard local.utf8.count <= 64 else { throw DomainError.invalid(field: field, "local part must be at most 64 bytes") }
        let atext = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~.".utf8)
        let labelText = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-".utf8)
        guard local.utf8.allSatisfy({ $0 >= 0x80 || atext.contains($0) }), !local.hasPrefix("."), !local.hasSuffix("."), !local.contains("..") else {
            throw DomainError.invalid(field: field, "'\(raw)' has characters not allowed before the @")
        }
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2, labels.allSatisfy({ label in
            !label.isEmpty && label.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-") && label.utf8.allSatisfy { $0 >= 0x80 || labelText.contains($0) }
        }) else { throw DomainError.invalid(field: field, "'\(raw)' does not have a valid domain") }
        return local.lowercased() + "@" + domain.lowercased()
    }

    /// Strings over an alphabet of the characters the rules treat apart, with runs long enough to cross the length limits.
    @Test func theOnePassCheckAgreesWithTheRulesAsWritten() async {
        let alphabet: [String] = ["a", "Z", "7", ".", "-", "@", "_", "+", " ", "é", "Ö", "\u{0}", "\u{2028}", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                  "bücher", "example.com", "@example.com", "x.y", "--", "..", "\t", "Σ"]
        var accepted = 0, refused = 0
        await propertyCheck(count: 4_000, input: Gen.int(in: 0...(alphabet.count - 1)).array(of: 0...12)) { picks in
            // Half the inputs are shaped local@domain.org, so that addresses that pass are common too.
            let words = picks.map { alphabet[$0] }
            let raw = picks.count % 2 == 1 ? words.joined()
                : words[..<(words.count / 2)].joined() + "@" + words[(words.count / 2)...].joined() + ".org"
            let expected = Result { try Self.reference(raw) }
            let actual = Result { try EmailAddress(raw).value }
            switch (expected, actual) {
            case (.success(let a), .success(let b)): #expect(a == b, "\(raw.debugDescription)"); accepted += 1
            case (.failure(let a), .failure(let b)): #expect("\(a)" == "\(b)", "\(raw.debugDescription)"); refused += 1
            default: Issue.record("\(raw.debugDescription): rules say \(expected), the check says \(actual)")
            }
        }
        // Both outcomes were exercised, or the comparison proves little.
        #expect(accepted > 100 && refused > 100, "accepted \(accepted), refused \(refused)")
    }

    @Test func errorNamesTheField() {
        #expect(throws: DomainError.invalid(field: "email", "'nope' is not an email address (expected local@domain)")) {
            try EmailAddress("nope")
        }
    }
}

@Suite struct TopicTests {
    @Test(arguments: ["events", "hr-training", "a1", "residential-property"])
    func acceptsSlugs(_ key: String) throws {
        try Topic.validateKey(key)
    }

    @Test(arguments: ["", "Events", "1events", "hr_training", "hr--training", "hr-", "-hr", "hr training", String(repeating: "a", count: 65),
                          "évents", "ev\u{0301}ents", "events\u{0}", "a-1-", String(repeating: "é", count: 40)])
    func rejectsNonSlugs(_ key: String) {
        #expect(throws: DomainError.self) { try Topic.validateKey(key) }
    }

    @Test func reportsEveryBadFieldAtOnce() {
        let topic = Topic(key: "Bad Key", title: " ", category: "", consentLifetimeDays: 0, createdAt: Date())
        do {
            try topic.validate()
            Issue.record("expected validation to fail")
        } catch let DomainError.invalid(errors) {
            #expect(Set(errors.map(\.field)) == ["key", "title", "category", "consentLifetimeDays"])
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}

@Suite struct ConsentPolicyTests {
    let active = Topic(key: "events", title: "Events", createdAt: Date())
    var retired: Topic {
        var t = active
        t.status = .retired
        return t
    }

    @Test func optInFromEveryNonGrantedStateGrants() throws {
        for state in [PreferenceState.none, .pending, .withdrawn, .expired] {
            #expect(try ConsentPolicy.decide(current: state, intent: .optIn, topic: active) == .change(action: .granted, to: .granted))
        }
    }

    @Test func sameValueRecordsNothingAndSaysWhy() throws {
        #expect(try ConsentPolicy.decide(current: .granted, intent: .optIn, topic: active) == .unchanged(reason: "already granted"))
        #expect(try ConsentPolicy.decide(current: .withdrawn, intent: .optOut, topic: active) == .unchanged(reason: "already withdrawn"))
        #expect(try ConsentPolicy.decide(current: .none, intent: .optOut, topic: active) == .unchanged(reason: "not opted in"))
    }

    @Test func optOutWithdrawsGrantsAndPendingRequests() throws {
        #expect(try ConsentPolicy.decide(current: .granted, intent: .optOut, topic: active) == .change(action: .withdrawn, to: .withdrawn))
        #expect(try ConsentPolicy.decide(current: .pending, intent: .optOut, topic: active) == .change(action: .withdrawn, to: .withdrawn))
    }

    @Test func requestIsPendingAndConfirmGrants() throws {
        #expect(try ConsentPolicy.decide(current: .none, intent: .request, topic: active) == .change(action: .requested, to: .pending))
        #expect(try ConsentPolicy.decide(current: .pending, intent: .confirm, topic: active) == .change(action: .confirmed, to: .granted))
        #expect(throws: DomainError.self) { try ConsentPolicy.decide(current: .none, intent: .confirm, topic: active) }
    }

    @Test func retiredTopicRefusesOptInButAllowsWithdrawal() throws {
        #expect(throws: DomainError.self) { try ConsentPolicy.decide(current: .none, intent: .optIn, topic: retired) }
        #expect(throws: DomainError.self) { try ConsentPolicy.decide(current: .none, intent: .request, topic: retired) }
        #expect(try ConsentPolicy.decide(current: .granted, intent: .optOut, topic: retired) == .change(action: .withdrawn, to: .withdrawn))
    }

    @Test func onlyGrantsExpire() throws {
        #expect(try ConsentPolicy.decide(current: .granted, intent: .expire, topic: active) == .change(action: .expired, to: .expired))
        #expect(try ConsentPolicy.decide(current: .withdrawn, intent: .expire, topic: active) == .unchanged(reason: "not granted"))
    }

    @Test func grantedIsTheOnlySendableStateAndItLapses() {
        let now = Date()
        func pref(_ s: PreferenceState, expires: Date? = nil) -> Preference {
            Preference(contactID: UUID(), topicKey: "t", state: s, since: now, expiresAt: expires, seq: 1)
        }
        for state in PreferenceState.allCases where state != .granted {
            #expect(!pref(state).allowsSending(at: now))
        }
        #expect(pref(.granted).allowsSending(at: now))
        #expect(!pref(.granted, expires: now).allowsSending(at: now))
        #expect(pref(.granted, expires: now).effectiveState(at: now) == .expired)
    }
}
