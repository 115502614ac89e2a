import AssentCore
import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// Forms, signed contact links and the person's own changes, on every store.
@Suite struct PublicLedgerTests {
    func signupForm(_ ledger: Ledger, id: String = "signup", doubleOptIn: Bool = false, kind: FormDefinition.Kind = .signup) async throws -> Form {
        try await ledger.createForm(id: id, definition: FormDefinition(
            title: "Stay in touch", kind: kind, topics: [FormTopic(key: "events"), FormTopic(key: "news")], doubleOptIn: doubleOptIn, askName: true))
    }

    @Test(arguments: StoreKind.available)
    func formVersionsAreKeptAndPinTheNoticeShown(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let v1 = try await signupForm(ledger)
        #expect(v1.version == 1)
        #expect(v1.definition.topics == [FormTopic(key: "events", noticeVersion: 1), FormTopic(key: "news", noticeVersion: 1)])
        _ = try await ledger.publishNotice(topicKey: "events", text: "Events, second wording.")
        // The saved version still shows notice 1; a new version pins notice 2.
        #expect(try await ledger.existingForm("signup").definition.topics[0].noticeVersion == 1)
        let v2 = try await ledger.updateForm(id: "signup") { $0.title = "Hear from us"; $0.topics[0].noticeVersion = nil }
        #expect(v2.version == 2)
        #expect(v2.definition.topics[0] == FormTopic(key: "events", noticeVersion: 2))
        #expect(try await ledger.store.form(id: "signup", version: 1)?.definition == v1.definition)
        #expect(try await ledger.store.form(id: "signup")?.definition.title == "Hear from us")
        // An edit that changes nothing saves nothing.
        #expect(try await ledger.updateForm(id: "signup") { $0.title = "Hear from us" }.version == 2)
        #expect(try await ledger.store.forms(includeRetired: false).map(\.id) == ["signup"])
        _ = try await ledger.retireForm(id: "signup")
        #expect(try await ledger.store.forms(includeRetired: false).isEmpty)
        #expect(try await ledger.store.forms(includeRetired: true).map(\.status) == [.retired])
        #expect(try await ledger.store.form(id: "signup", version: 1)?.status == .retired)
    }

    @Test(arguments: StoreKind.available)
    func badFormsAreRefusedNamingEachFieldAndSaveNothing(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        _ = try await ledger.retireTopic(key: "hr-training")
        do {
            _ = try await ledger.createForm(id: "Bad Id", definition: FormDefinition(
                title: " ", topics: [FormTopic(key: "events"), FormTopic(key: "events")], successURL: "javascript:alert(1)",
                allowedOrigins: ["https://example.org/path"]))
            Issue.record("accepted")
        } catch let DomainError.invalid(errors) {
            #expect(Set(errors.map(\.field)) == ["id", "title", "topics[1].key", "successUrl", "allowedOrigins[0]"])
        }
        do {
            _ = try await ledger.createForm(id: "ok", definition: FormDefinition(
                title: "T", topics: [FormTopic(key: "nope"), FormTopic(key: "hr-training"), FormTopic(key: "news", noticeVersion: 7)]))
            Issue.record("accepted")
        } catch let DomainError.invalid(errors) {
            #expect(errors.map(\.field) == ["topics[0].key", "topics[1].key", "topics[2].noticeVersion"])
        }
        #expect(try await ledger.store.forms(includeRetired: true).isEmpty)
        _ = try await signupForm(ledger)
        await #expect(throws: DomainError.conflict(field: "id", message: "a form with id 'signup' already exists")) {
            _ = try await signupForm(ledger)
        }
    }

    @Test(arguments: StoreKind.available)
    func signupCreatesTheContactAndRecordsFormEvidence(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let form = try await signupForm(ledger)
        let result = try await ledger.submitForm(FormSubmission(formID: form.id, email: " Ann@Example.com ", name: "Ann", locale: "de",
                                                                chosenTopics: ["news"], ipAddress: "203.0.113.9", userAgent: "Test/1"))
        #expect(result.createdContact)
        #expect(result.contact.email.value == "ann@example.com")
        #expect(result.contact.locale == "de")
        #expect(result.change.events.map(\.topicKey) == ["news"])
        let event = try #require(result.change.events.first)
        #expect(event.source == .form)
        #expect(event.formID == "signup" && event.formVersion == 1 && event.noticeVersion == 1)
        #expect(event.actor.kind == .subject)
        let timeline = try await ledger.timeline(contactID: result.contact.id, beforeSeq: nil, limit: 10)
        #expect(timeline.first?.personal == PersonalEvidence(ipAddress: "203.0.113.9", userAgent: "Test/1"))
        // The same address again is the same contact; an unticked box changes nothing.
        let again = try await ledger.submitForm(FormSubmission(formID: form.id, email: "ann@example.com", chosenTopics: ["events"]))
        #expect(!again.createdContact && again.contact.id == result.contact.id)
        #expect(Set(try await ledger.store.preferences(contactID: result.contact.id).map(\.topicKey)) == ["events", "news"])
    }

    @Test(arguments: StoreKind.available)
    func aPostRecordsTheFormVersionThePageShowed(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        _ = try await signupForm(ledger)
        _ = try await ledger.publishNotice(topicKey: "news", text: "News v2.")
        _ = try await ledger.updateForm(id: "signup") { $0.topics[1].noticeVersion = nil }
        let old = try await ledger.submitForm(FormSubmission(formID: "signup", formVersion: 1, email: "a@example.com", chosenTopics: ["news"]))
        #expect(old.change.events.first.map { [$0.formVersion, $0.noticeVersion] } == [1, 1])
        let new = try await ledger.submitForm(FormSubmission(formID: "signup", email: "b@example.com", chosenTopics: ["news"]))
        #expect(new.change.events.first.map { [$0.formVersion, $0.noticeVersion] } == [2, 2])
        await #expect(throws: DomainError.invalid(field: "formVersion", "form 'signup' has versions 1...2, not 9")) {
            _ = try await ledger.submitForm(FormSubmission(formID: "signup", formVersion: 9, email: "c@example.com", chosenTopics: ["news"]))
        }
    }

    @Test(arguments: StoreKind.available)
    func badSubmissionsChangeNothing(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        _ = try await signupForm(ledger)
        do {
            _ = try await ledger.submitForm(FormSubmission(formID: "signup", email: "not an email", chosenTopics: ["hr-training"]))
            Issue.record("accepted")
        } catch let DomainError.invalid(errors) {
            #expect(errors.map(\.field) == ["email", "topics"])
        }
        await #expect(throws: DomainError.invalid(field: "topics", "choose at least one topic")) {
            _ = try await ledger.submitForm(FormSubmission(formID: "signup", email: "a@example.com", chosenTopics: []))
        }
        #expect(try await ledger.store.contacts(after: nil, limit: 10).isEmpty)
        _ = try await ledger.retireForm(id: "signup")
        await #expect(throws: DomainError.gone(what: "form", id: "signup")) {
            _ = try await ledger.submitForm(FormSubmission(formID: "signup", email: "a@example.com", chosenTopics: ["news"]))
        }
        await #expect(throws: DomainError.notFound(what: "form", id: "nope")) {
            _ = try await ledger.submitForm(FormSubmission(formID: "nope", email: "a@example.com", chosenTopics: ["news"]))
        }
    }

    @Test(arguments: StoreKind.available)
    func aDoubleOptInFormAsksEveryTopicToBeConfirmed(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger) // none of these topics requires double opt-in by itself
        _ = try await signupForm(ledger, doubleOptIn: true)
        let result = try await ledger.submitForm(FormSubmission(formID: "signup", email: "a@example.com", chosenTopics: ["events", "news"]))
        #expect(result.change.events.map(\.action) == [.requested, .requested])
        #expect(result.change.confirmationRequestedFor == ["events", "news"])
        #expect(try await ledger.store.outboxItems(status: .pending, limit: 10).map(\.kind) == [ConfirmationEmail.kind])
    }

    @Test(arguments: StoreKind.available)
    func postingTheSameAddressAgainCannotFloodItsInbox(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let ledger = try await kind.makeLedger(now: { clock.now })
        try await seedTopics(ledger)
        _ = try await signupForm(ledger, doubleOptIn: true)
        for _ in 0..<10 {
            _ = try await ledger.submitForm(FormSubmission(formID: "signup", email: "victim@example.com", chosenTopics: ["events"]))
        }
        #expect(try await ledger.store.outboxItems(status: nil, limit: 50).count == 1, "one email, however often the form is posted")
        // A new topic is news to the person: a new link covering both goes out at once.
        _ = try await ledger.submitForm(FormSubmission(formID: "signup", email: "victim@example.com", chosenTopics: ["news"]))
        #expect(try await ledger.store.outboxItems(status: nil, limit: 50).count == 2)
        // An hour later the person may ask again (the first email may have been lost).
        clock.now = clock.now.addingTimeInterval(3_600)
        _ = try await ledger.submitForm(FormSubmission(formID: "signup", email: "victim@example.com", chosenTopics: ["events"]))
        #expect(try await ledger.store.outboxItems(status: nil, limit: 50).count == 3)
    }

    @Test(arguments: StoreKind.available)
    func aPreferencesFormFromTheirLinkWithdrawsWhatIsUnticked(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        _ = try await signupForm(ledger, id: "prefs", kind: .preferences)
        let contact = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await optIn(ledger, contact, ["events", "hr-training"])
        let result = try await ledger.submitForm(FormSubmission(formID: "prefs", chosenTopics: ["news"], contactID: contact.id))
        #expect(result.change.events.map { "\($0.topicKey):\($0.action.rawValue)" } == ["events:withdrawn", "news:granted"])
        // Topics the form does not offer are left alone.
        #expect(try await ledger.check(email: contact.email, topicKey: "hr-training").allowed)
        // Without the person's link, the same form only adds.
        let anonymous = try await ledger.submitForm(FormSubmission(formID: "prefs", email: "ann@example.com", chosenTopics: ["events"]))
        #expect(anonymous.change.events.map(\.action) == [.granted])
        #expect(try await ledger.check(email: contact.email, topicKey: "news").allowed)
    }

    @Test(arguments: StoreKind.available)
    func choicesOptInWithdrawAndLeavePendingAlone(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        _ = try await ledger.updateTopic(key: "hr-training") { $0.requiresDoubleOptIn = true }
        let contact = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await optIn(ledger, contact, ["events"])
        _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [TopicChange(topicKey: "hr-training", intent: .optIn)],
                                                        source: .form, actor: .subject))
        let shown = ["events", "news", "hr-training"].map { ShownTopic(key: $0, noticeVersion: 1) }
        let result = try await ledger.applyChoices(contactID: contact.id, shown: shown, chosen: ["news", "hr-training"],
                                                   source: .preferenceCentre, evidence: Evidence())
        #expect(result.events.map { "\($0.topicKey):\($0.action.rawValue):\($0.source.rawValue)" }
            == ["events:withdrawn:preference_centre", "news:granted:preference_centre"])
        #expect(try await ledger.check(email: contact.email, topicKey: "hr-training").reason == .pending)
        // Saving the same choices again records nothing.
        #expect(try await ledger.applyChoices(contactID: contact.id, shown: shown, chosen: ["news", "hr-training"],
                                              source: .preferenceCentre, evidence: Evidence()).events.isEmpty)
        let all = try await ledger.withdraw(contactID: contact.id, topicKey: nil, source: .preferenceCentre, evidence: Evidence())
        #expect(all.events.map(\.topicKey) == ["hr-training", "news"])
        #expect(try await ledger.withdraw(contactID: contact.id, topicKey: nil, source: .preferenceCentre, evidence: Evidence()).events.isEmpty)
        #expect(try await ledger.verify().isIntact)
    }

    @Test(arguments: StoreKind.available)
    func linksResolveOnlyForTheirPurposeAndDieWhenRotated(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let ann = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        let bob = try await ledger.createContact(email: EmailAddress("bob@example.com"), name: nil, externalID: nil, locale: nil)
        let centre = try await ledger.linkToken(ContactLink(purpose: .preferenceCentre, contactID: ann.id))
        let unsubscribe = try await ledger.linkToken(ContactLink(purpose: .unsubscribe, contactID: ann.id, topicKey: "news"))
        #expect(try await ledger.linkToken(ContactLink(purpose: .preferenceCentre, contactID: ann.id)) == centre, "stable until rotated")
        #expect(try await ledger.resolveLink(centre, purpose: .preferenceCentre)?.contact.id == ann.id)
        #expect(try await ledger.resolveLink(unsubscribe, purpose: .unsubscribe)?.link.topicKey == "news")
        // Wrong purpose, another contact's id with this MAC, a flipped bit, truncation: all refused.
        #expect(try await ledger.resolveLink(centre, purpose: .unsubscribe) == nil)
        #expect(try await ledger.resolveLink(unsubscribe, purpose: .preferenceCentre) == nil)
        var bytes = [UInt8](Data(base64URL: centre)!)
        withUnsafeBytes(of: bob.id.uuid) { for (i, b) in $0.enumerated() { bytes[1 + i] = b } }
        _ = try await ledger.linkToken(ContactLink(purpose: .preferenceCentre, contactID: bob.id))
        #expect(try await ledger.resolveLink(Data(bytes).base64URL, purpose: .preferenceCentre) == nil)
        for i in [0, 5, 20, 30] {
            var flipped = [UInt8](Data(base64URL: centre)!)
            flipped[i] ^= 0x01
            #expect(try await ledger.resolveLink(Data(flipped).base64URL, purpose: .preferenceCentre) == nil, "bit flip at \(i)")
        }
        #expect(try await ledger.resolveLink(String(centre.dropLast(2)), purpose: .preferenceCentre) == nil)
        #expect(try await ledger.resolveLink("not a token", purpose: .preferenceCentre) == nil)
        // Another instance's master key makes different links.
        let stranger = Ledger(store: ledger.store, masterKey: .generate())
        #expect(try await stranger.resolveLink(centre, purpose: .preferenceCentre) == nil)
        try await ledger.rotateLinks(contactID: ann.id)
        #expect(try await ledger.resolveLink(centre, purpose: .preferenceCentre) == nil)
        #expect(try await ledger.resolveLink(unsubscribe, purpose: .unsubscribe) == nil)
        let fresh = try await ledger.linkToken(ContactLink(purpose: .preferenceCentre, contactID: ann.id))
        #expect(fresh != centre)
        #expect(try await ledger.resolveLink(fresh, purpose: .preferenceCentre)?.contact.id == ann.id)
    }

    @Test(arguments: StoreKind.available)
    func concurrentFirstLinksAgreeOnOneSecret(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        let ann = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        let tokens = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<8 { group.addTask { try await ledger.linkToken(ContactLink(purpose: .preferenceCentre, contactID: ann.id)) } }
            return try await group.reduce(into: Set<String>()) { $0.insert($1) }
        }
        #expect(tokens.count == 1)
    }
}
