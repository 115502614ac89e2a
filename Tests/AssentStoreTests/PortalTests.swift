import AssentCore
import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// The portal's sign-in links, sessions, subject requests and data export, on every store.
@Suite struct PortalTests {
    func queuedSignInTokens(_ ledger: Ledger) async throws -> [String] {
        try await ledger.store.outboxItems(status: nil, limit: 100).filter { $0.kind == PortalLinkEmail.kind }
            .map { try PortalLinkEmail.open($0, masterKey: ledger.masterKey).token }
    }

    @Test(arguments: StoreKind.available)
    func aKnownAddressGetsOneSingleUseLinkAndAnUnknownOneNothing(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        let ann = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: "Ann", externalID: nil, locale: "de")
        try await ledger.requestPortalLink(email: "nobody@example.com")
        #expect(try await ledger.store.outboxItems(status: nil, limit: 10).isEmpty)
        try await ledger.requestPortalLink(email: " ANN@example.com ")
        let tokens = try await queuedSignInTokens(ledger)
        #expect(tokens.count == 1)
        let token = try #require(tokens.first)
        let email = try PortalLinkEmail.open(try #require(try await ledger.store.outboxItems(status: nil, limit: 1).first), masterKey: ledger.masterKey)
        #expect(email.to == "ann@example.com" && email.locale == "de" && email.contactID == ann.id)
        guard case .valid = try await ledger.portalLinkState(token: token) else { Issue.record("not valid"); return }
        let signedIn = try #require(try await ledger.signIn(token: token))
        #expect(signedIn.session.contactID == ann.id)
        #expect(try await ledger.signIn(token: token) == nil, "single use")
        #expect(try await ledger.portalLinkState(token: token) == .used)
        #expect(try await ledger.portalSession(secret: signedIn.secret)?.contact.id == ann.id)
        #expect(try await ledger.portalSession(secret: signedIn.secret + "x") == nil)
        try await ledger.signOut(secret: signedIn.secret)
        #expect(try await ledger.portalSession(secret: signedIn.secret) == nil)
        await #expect(throws: DomainError.invalid(field: "email", "'not-an-email' is not an email address (expected local@domain)")) {
            try await ledger.requestPortalLink(email: "not-an-email")
        }
    }

    @Test(arguments: StoreKind.available)
    func linksAndSessionsExpireAndMailBombingIsCapped(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let ledger = try await kind.makeLedger(now: { clock.now })
        _ = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        for _ in 0..<(Ledger.portalLinksPerHour + 3) { try await ledger.requestPortalLink(email: "ann@example.com") }
        let tokens = try await queuedSignInTokens(ledger)
        #expect(tokens.count == Ledger.portalLinksPerHour)
        clock.now = clock.now.addingTimeInterval(Ledger.portalLinkLifetime + 1)
        #expect(try await ledger.portalLinkState(token: tokens[0]) == .expired)
        #expect(try await ledger.signIn(token: tokens[0]) == nil)
        clock.now = clock.now.addingTimeInterval(3_600)
        try await ledger.requestPortalLink(email: "ann@example.com")
        let fresh = try #require(try await queuedSignInTokens(ledger).first { !tokens.contains($0) })
        let session = try #require(try await ledger.signIn(token: fresh))
        clock.now = clock.now.addingTimeInterval(Ledger.portalSessionLifetime + 1)
        #expect(try await ledger.portalSession(secret: session.secret) == nil)
    }

    @Test func csrfTokensBelongToOneSession() async throws {
        let ledger = Ledger(store: MemoryStore(), masterKey: .generate())
        let token = ledger.csrfToken(sessionSecret: "session-a")
        #expect(ledger.checkCSRF(token, sessionSecret: "session-a"))
        #expect(!ledger.checkCSRF(token, sessionSecret: "session-b"))
        #expect(!ledger.checkCSRF(nil, sessionSecret: "session-a"))
        #expect(!ledger.checkCSRF(String(token.dropLast()), sessionSecret: "session-a"))
        #expect(!Ledger(store: MemoryStore(), masterKey: .generate()).checkCSRF(token, sessionSecret: "session-a"), "another instance's key")
    }

    @Test(arguments: StoreKind.available)
    func anErasureRequestIsRecordedOnceWithItsDueDate(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000)) // 2027-01-15
        let ledger = try await kind.makeLedger(now: { clock.now })
        let ann = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        let first = try await ledger.recordSubjectRequest(contactID: ann.id, kind: .erasure, channel: "portal", note: "Please forget me.")
        #expect(first.dueAt == Date(timeIntervalSince1970: 1_800_000_000 + 31 * 86_400), "one calendar month (January has 31 days)")
        let again = try await ledger.recordSubjectRequest(contactID: ann.id, kind: .erasure, channel: "portal", note: nil)
        #expect(again.id == first.id)
        let open = try await ledger.store.subjectRequests(contactID: nil, status: .open, limit: 10)
        #expect(open == [first])
        #expect(try await ledger.store.subjectRequests(contactID: nil, status: .closed, limit: 10).isEmpty)
        await #expect(throws: DomainError.self) {
            _ = try await ledger.recordSubjectRequest(contactID: ann.id, kind: .access, channel: "portal", note: "bad\u{0}note")
        }
    }

    @Test(arguments: StoreKind.available)
    func theExportHoldsEveryEventWithEvidenceAndTheNoticesShown(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        _ = try await ledger.createForm(id: "signup", definition: FormDefinition(title: "Join", topics: [FormTopic(key: "news")], doubleOptIn: false))
        let result = try await ledger.submitForm(FormSubmission(formID: "signup", email: "ann@example.com", chosenTopics: ["news"], ipAddress: "192.0.2.7"))
        let ann = result.contact
        _ = try await optIn(ledger, ann, ["events"], source: .staff, note: "Said yes on the phone.", channel: .phone)
        _ = try await ledger.publishNotice(topicKey: "events", text: "Events v2.")
        _ = try await ledger.withdraw(contactID: ann.id, topicKey: "events", source: .portal, evidence: Evidence())
        _ = try await ledger.recordSubjectRequest(contactID: ann.id, kind: .erasure, channel: "portal", note: nil)
        let export = try await ledger.exportPersonalData(contactID: ann.id)
        #expect(export.contact.email == "ann@example.com")
        #expect(export.events.map { "\($0.topic):\($0.action):\($0.source)" } == ["news:granted:form", "events:granted:staff", "events:withdrawn:portal"])
        #expect(export.events[0].evidence?.ip == "192.0.2.7" && export.events[0].formId == "signup" && export.events[0].formVersion == 1)
        #expect(export.events[1].evidence?.note == "Said yes on the phone." && export.events[1].channel == "phone")
        #expect(export.notices.map { "\($0.topic)#\($0.version)" } == ["events#1", "events#2", "news#1"])
        #expect(export.notices.first { $0.topic == "news" }?.text == "We will email you about News.")
        #expect(export.forms.map(\.title) == ["Join"])
        #expect(export.preferences.map { "\($0.topic)=\($0.state)" } == ["events=withdrawn", "news=granted"])
        #expect(export.requests.map(\.kind) == ["erasure"])
    }
}
