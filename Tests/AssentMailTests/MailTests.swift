import AssentCore
@testable import AssentMail
import AssentStore
import AssentTestSupport
import Foundation
import Testing

@Suite struct MIMETests {
    @Test func messagesAreMultipartUTF8WithIdAndDate() throws {
        var message = MailMessage(from: MailAddress("privacy@example.com", name: "Example, Ltd"), to: MailAddress("jo@example.com", name: "Jo Müller"),
                                  subject: "Bitte bestätigen Sie Ihr Abonnement", text: "Hallo\n.\nZeile", html: "<p>Hallo</p>",
                                  messageID: "abc@example.com", date: Date(timeIntervalSince1970: 1_795_000_000))
        message.headers = [("List-Unsubscribe", "<https://example.com/u>"), ("Bad Header", "x")]
        let raw = String(decoding: message.rendered(boundary: "b1"), as: UTF8.self)
        #expect(raw.contains("From: \"Example, Ltd\" <privacy@example.com>\r\n"))
        #expect(raw.contains("To: =?UTF-8?B?"))
        #expect(raw.contains("Subject: =?UTF-8?B?"))
        #expect(!raw.contains("bestätigen"), "non-ASCII never appears raw")
        #expect(raw.contains("Message-ID: <abc@example.com>\r\n"))
        #expect(raw.contains("Date: Wed, 18 Nov 2026 "))
        #expect(raw.contains("Content-Type: multipart/alternative; boundary=\"b1\""))
        #expect(raw.contains("List-Unsubscribe: <https://example.com/u>"))
        #expect(!raw.contains("Bad Header"))
        #expect(plainTextPart(of: raw) == "Hallo\r\n.\r\nZeile")
        #expect(raw.allSatisfy { $0.isASCII })
        // Subject words decode back to the original.
        let subjectLine = raw.components(separatedBy: "\r\n").drop { !$0.hasPrefix("Subject:") }.prefix { !$0.hasPrefix("Date:") }.joined()
        let decoded = subjectLine.components(separatedBy: "=?UTF-8?B?").dropFirst().compactMap { part in
            Data(base64Encoded: String(part.prefix { $0 != "?" })).map { String(decoding: $0, as: UTF8.self) }
        }.joined()
        #expect(decoded == "Bitte bestätigen Sie Ihr Abonnement")
    }

    @Test func addressesParse() {
        #expect(MailAddress(parsing: "Assent <no-reply@assent.localhost>") == MailAddress("no-reply@assent.localhost", name: "Assent"))
        #expect(MailAddress(parsing: "a@b.com") == MailAddress("a@b.com"))
    }

    @Test func smtpURLsParseAndBadOnesAreNamed() throws {
        let starttls = try SMTPConfiguration(url: "smtp://user%40x:p%3Ass@mail.example.com")
        #expect(starttls.port == 587 && starttls.security == .startTLSRequired && starttls.username == "user@x" && starttls.password == "p:ss")
        #expect(try SMTPConfiguration(url: "smtps://mail.example.com").security == .implicitTLS)
        #expect(try SMTPConfiguration(url: "smtps://mail.example.com").port == 465)
        #expect(try SMTPConfiguration(url: "smtp://127.0.0.1:2525?starttls=none").security == .none)
        #expect(throws: MailError.self) { try SMTPConfiguration(url: "http://mail.example.com") }
        #expect(throws: MailError.self) { try SMTPConfiguration(url: "smtp://mail.example.com?starttls=maybe") }
        #expect(throws: MailError.self) { try SMTPConfiguration(url: "smtp://mail.example.com?tls=1") }
        #expect(throws: MailError.self) { try SMTPConfiguration(url: "smtp://mail.example.com?ca=/nope.pem") }
    }
}

@Suite struct TemplateTests {
    func store() async throws -> (Ledger, MailComposer) {
        let ledger = Ledger(store: MemoryStore(), masterKey: .generate())
        _ = try await ledger.createTopic(Topic(key: "events", title: "Events <&>", createdAt: Date()), noticeText: "We send invitations.")
        let composer = MailComposer(templates: try await MailTemplates(), settings: MailSettings(from: MailAddress("p@example.com"), organisation: "Example",
                                                                                               publicURL: { "https://consent.example.com/" }), store: ledger.store)
        return (ledger, composer)
    }

    func email(locale: String?) -> ConfirmationEmail {
        ConfirmationEmail(contactID: UUID(), to: "jo@example.com", name: "Jo", locale: locale, token: "TOKEN123", topics: ["events"],
                          expiresAt: Date(timeIntervalSince1970: 1_795_000_000))
    }

    @Test func englishAndGermanAreShippedAndLocalesFallBack() async throws {
        let (_, composer) = try await store()
        let en = try await composer.confirmation(email(locale: nil), messageID: "1@x", date: Date())
        #expect(en.subject == "Please confirm your subscription to Example")
        #expect(en.text.contains("https://consent.example.com/confirm/TOKEN123"))
        #expect(en.text.contains("Events <&>") && en.text.contains("We send invitations."))
        #expect(en.html.contains("Events &lt;&amp;&gt;"), "HTML is escaped")
        let de = try await composer.confirmation(email(locale: "de-AT"), messageID: "2@x", date: Date())
        #expect(de.subject == "Bitte bestätigen Sie Ihr Abonnement bei Example")
        #expect(de.text.contains("Guten Tag Jo"))
        #expect(try await composer.confirmation(email(locale: "fr"), messageID: "3@x", date: Date()).subject.hasPrefix("Please confirm"))
    }

    @Test func anOrganisationsFolderOverridesShippedTemplates() async throws {
        let dir = try TestDirectory.make()
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("en"), withIntermediateDirectories: true)
        try "Confirm, {{{name}}}!".write(to: dir.appendingPathComponent("en/confirmation.subject.mustache"), atomically: true, encoding: .utf8)
        let templates = try await MailTemplates(overrides: dir.path)
        #expect(try templates.render("confirmation", part: "subject", locale: "en", model: ["name": "Jo"]) == "Confirm, Jo!")
        #expect(try templates.render("confirmation", part: "text", locale: "en", model: ["name": "Jo", "link": "L"]).contains("L"))
        await #expect(throws: MailError.self) { _ = try await MailTemplates(overrides: dir.appendingPathComponent("missing").path) }
    }
}

/// Records what it is asked to send; optionally fails.
final class RecordingTransport: MailTransport, @unchecked Sendable {
    private let lock = NSLock()
    private var sent: [MailMessage] = []
    var failure: MailError?
    var summary: String { "recording" }

    var messages: [MailMessage] { lock.withLock { sent } }

    func send(_ message: MailMessage) async throws {
        if let failure = lock.withLock({ failure }) { throw failure }
        lock.withLock { sent.append(message) }
    }

    func fail(with error: MailError?) { lock.withLock { failure = error } }
}

@Suite struct OutboxWorkerTests {
    struct Setup {
        let ledger: Ledger
        let worker: OutboxWorker
        let transport: RecordingTransport
        let clock: TestClock
        let contact: Contact
    }

    func setup(_ kind: StoreKind) async throws -> Setup {
        let clock = TestClock(Date().truncatedToMilliseconds)
        let ledger = try await kind.makeLedger(now: { clock.now })
        _ = try await ledger.createTopic(Topic(key: "events", title: "Events", requiresDoubleOptIn: true, createdAt: Date()), noticeText: "Invitations.")
        let contact = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: "Jo", externalID: nil, locale: nil)
        let transport = RecordingTransport()
        let composer = MailComposer(templates: try await MailTemplates(), settings: MailSettings(from: MailAddress("p@example.com"), organisation: "Example",
                                                                                               publicURL: { "http://127.0.0.1:8080" }), store: ledger.store)
        let worker = OutboxWorker(store: ledger.store, masterKey: ledger.masterKey, transport: transport, composer: composer, now: { clock.now })
        _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [.init(topicKey: "events", intent: .optIn)], source: .form, actor: .apiKey("k")))
        return Setup(ledger: ledger, worker: worker, transport: transport, clock: clock, contact: contact)
    }

    @Test(arguments: StoreKind.available)
    func sendsOnceAndScrubsTheLinkFromTheOutbox(_ kind: StoreKind) async throws {
        let s = try await setup(kind)
        #expect(try await s.worker.runOnce() == 1)
        #expect(try await s.worker.runOnce() == 0, "sent items are not sent again")
        let message = try #require(s.transport.messages.first)
        #expect(s.transport.messages.count == 1 && message.to.address == "jo@example.com")
        let token = try #require(message.text.components(separatedBy: "/confirm/").last?.prefix { !$0.isWhitespace })
        guard case .valid = try await s.ledger.linkStatus(token: String(token)) else { Issue.record("the emailed link must work"); return }
        let item = try #require(try await s.ledger.store.outboxItems(status: .sent, limit: 1).first)
        #expect(try ConfirmationEmail.open(item, masterKey: s.ledger.masterKey).token == "[sent]")
    }

    @Test(arguments: StoreKind.available)
    func portalSignInEmailsCarryAWorkingLinkThatIsScrubbedOnceSent(_ kind: StoreKind) async throws {
        let s = try await setup(kind)
        _ = try await s.worker.runOnce() // the confirmation email from setup
        _ = try await s.ledger.updateContact(id: s.contact.id) { $0.locale = "de" }
        try await s.ledger.requestPortalLink(email: "jo@example.com")
        #expect(try await s.worker.runOnce() == 1)
        let message = try #require(s.transport.messages.last)
        #expect(message.subject == "Ihr Anmeldelink für Example" && message.to.address == "jo@example.com")
        let token = try #require(message.text.components(separatedBy: "/portal/signin/").last?.prefix { !$0.isWhitespace })
        #expect(message.text.contains("http://127.0.0.1:8080/portal/signin/\(token)"))
        guard case .valid = try await s.ledger.portalLinkState(token: String(token)) else { Issue.record("the emailed link must work"); return }
        let item = try #require(try await s.ledger.store.outboxItems(status: .sent, limit: 10).first { $0.kind == PortalLinkEmail.kind })
        #expect(try PortalLinkEmail.open(item, masterKey: s.ledger.masterKey).token == "[sent]")
        // A link used or expired before its email went out is not sent.
        try await s.ledger.requestPortalLink(email: "jo@example.com")
        let queued = try #require(try await s.ledger.store.outboxItems(status: .pending, limit: 10).first { $0.kind == PortalLinkEmail.kind })
        _ = try await s.ledger.signIn(token: try PortalLinkEmail.open(queued, masterKey: s.ledger.masterKey).token)
        #expect(try await s.worker.runOnce() == 1)
        #expect(s.transport.messages.count == 2, "the used link's email was skipped")
    }

    @Test(arguments: StoreKind.available)
    func transientFailuresRetryOnScheduleAndPermanentOnesDie(_ kind: StoreKind) async throws {
        let s = try await setup(kind)
        s.transport.fail(with: .transient("421 busy"))
        #expect(try await s.worker.runOnce() == 1)
        let pending = try #require(try await s.ledger.store.outboxItems(status: .pending, limit: 1).first)
        #expect(pending.lastError == "421 busy" && pending.nextAttemptAt == s.clock.now.addingTimeInterval(30))
        #expect(try await s.worker.runOnce() == 0, "not due yet")
        s.clock.now = s.clock.now.addingTimeInterval(30)
        s.transport.fail(with: .permanent("550 mailbox unavailable"))
        #expect(try await s.worker.runOnce() == 1)
        let dead = try #require(try await s.ledger.store.outboxItems(status: .dead, limit: 1).first)
        #expect(dead.lastError == "550 mailbox unavailable" && dead.attempts == 2)
        s.transport.fail(with: nil)
        #expect(try await s.ledger.store.retryOutbox(id: dead.id, now: s.clock.now) == 1)
        #expect(try await s.worker.runOnce() == 1)
        #expect(s.transport.messages.count == 1)
    }

    @Test func retriesEndInTheDeadState() {
        #expect(OutboxItem.retryDelay(afterAttempt: 1) == 30)
        #expect(OutboxItem.retryDelay(afterAttempt: 8) == 28_800)
        #expect(OutboxItem.retryDelay(afterAttempt: 9) == nil)
    }
}

@Suite(.enabled(if: SMTPTestServer.shouldRun, "needs python3 with aiosmtpd: run scripts/test, which installs it and sets ASSENT_TEST_SMTP=1"))
struct SMTPTests {
    func message(to: String = "jo@example.com") -> MailMessage {
        MailMessage(from: MailAddress("privacy@example.com"), to: MailAddress(to), subject: "Grüße", text: "Hello\n.leading dot\nbye",
                    html: "<p>Hello</p>", messageID: "\(UUID().uuidString)@example.com", date: Date())
    }

    @Test func deliversWithAuthOverPlainSMTP() async throws {
        let server = try SMTPTestServer(user: "assent", password: "s3cret")
        defer { server.stop() }
        let transport = SMTPTransport(configuration: try SMTPConfiguration(url: "smtp://assent:s3cret@127.0.0.1:\(server.port)?starttls=none"))
        try await transport.send(message())
        let received = try await server.waitForMessages(1)
        #expect(received.count == 1)
        #expect(plainTextPart(of: try #require(received.first)) == "Hello\r\n.leading dot\r\nbye", "dot-stuffing is undone by the server")
    }

    @Test func wrongPasswordIsAPermanentError() async throws {
        let server = try SMTPTestServer(user: "assent", password: "s3cret")
        defer { server.stop() }
        let transport = SMTPTransport(configuration: try SMTPConfiguration(url: "smtp://assent:wrong@127.0.0.1:\(server.port)?starttls=none"))
        await #expect(throws: MailError.self) { try await transport.send(message()) }
        #expect(server.messages().isEmpty)
    }

    @Test func upgradesWithSTARTTLSAndVerifiesTheCertificate() async throws {
        let server = try SMTPTestServer(starttls: true, user: "assent", password: "s3cret")
        defer { server.stop() }
        let ca = try #require(server.certificate).path
        let transport = SMTPTransport(configuration: try SMTPConfiguration(url: "smtp://assent:s3cret@localhost:\(server.port)?ca=\(ca)"))
        try await transport.send(message())
        #expect(try await server.waitForMessages(1).count == 1)
        // Without trusting the test CA the upgrade must fail, and nothing is sent in clear text.
        let untrusting = SMTPTransport(configuration: try SMTPConfiguration(url: "smtp://assent:s3cret@localhost:\(server.port)"))
        await #expect(throws: (any Error).self) { try await untrusting.send(message()) }
        #expect(server.messages().count == 1)
    }

    @Test func deliversOverImplicitTLS() async throws {
        let server = try SMTPTestServer(implicitTLS: true, user: "assent", password: "s3cret")
        defer { server.stop() }
        let ca = try #require(server.certificate).path
        let transport = SMTPTransport(configuration: try SMTPConfiguration(url: "smtps://assent:s3cret@localhost:\(server.port)?ca=\(ca)"))
        try await transport.send(message())
        #expect(try await server.waitForMessages(1).count == 1)
    }

    @Test func authenticatesWithLOGINWhenPLAINIsNotOffered() async throws {
        let server = try SMTPTestServer(loginOnly: true, user: "assent", password: "s3cret")
        defer { server.stop() }
        let transport = SMTPTransport(configuration: try SMTPConfiguration(url: "smtp://assent:s3cret@127.0.0.1:\(server.port)?starttls=none"))
        try await transport.send(message())
        #expect(try await server.waitForMessages(1).count == 1)
    }

    @Test func requiredSTARTTLSRefusesAServerWithoutIt() async throws {
        let server = try SMTPTestServer()
        defer { server.stop() }
        let transport = SMTPTransport(configuration: try SMTPConfiguration(url: "smtp://127.0.0.1:\(server.port)"))
        await #expect(throws: MailError.transient("the SMTP server does not offer STARTTLS, which is required (use ?starttls=opportunistic to allow plain text)")) {
            try await transport.send(message())
        }
        #expect(server.messages().isEmpty)
    }

    /// The server is down when the email is due: nothing is lost; once it is
    /// back, the retry delivers.
    @Test(arguments: StoreKind.available)
    func anOutageLosesNothing(_ kind: StoreKind) async throws {
        let port = try freeLocalPort()
        let clock = TestClock(Date().truncatedToMilliseconds)
        let ledger = try await kind.makeLedger(now: { clock.now })
        _ = try await ledger.createTopic(Topic(key: "events", title: "Events", requiresDoubleOptIn: true, createdAt: Date()), noticeText: "Invitations.")
        let contact = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [.init(topicKey: "events", intent: .optIn)], source: .form, actor: .apiKey("k")))
        let transport = SMTPTransport(configuration: try SMTPConfiguration(url: "smtp://127.0.0.1:\(port)?starttls=none"))
        let composer = MailComposer(templates: try await MailTemplates(), settings: MailSettings(from: MailAddress("p@example.com"), organisation: "Example",
                                                                                               publicURL: { "http://127.0.0.1:8080" }), store: ledger.store)
        let worker = OutboxWorker(store: ledger.store, masterKey: ledger.masterKey, transport: transport, composer: composer, now: { clock.now })

        #expect(try await worker.runOnce() == 1)
        let waiting = try #require(try await ledger.store.outboxItems(status: .pending, limit: 1).first)
        #expect(waiting.lastError?.contains("cannot connect") == true)

        let server = try SMTPTestServer(port: port)
        defer { server.stop() }
        clock.now = clock.now.addingTimeInterval(31)
        #expect(try await worker.runOnce() == 1)
        #expect(try await server.waitForMessages(1).count == 1)
        #expect(try await ledger.store.outboxItems(status: .sent, limit: 1).count == 1)
    }
}

@Suite struct ReceiptEmailTests {
    @Test(arguments: StoreKind.available)
    func confirmingSendsTheSignedReceiptsAsAttachments(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        _ = try await ledger.createTopic(Topic(key: "events", title: "Events", requiresDoubleOptIn: true, createdAt: Date()), noticeText: "Invitations.")
        let contact = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: "Jo", externalID: nil, locale: "de")
        _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [.init(topicKey: "events", intent: .optIn)], source: .form, actor: .apiKey("k")))
        let transport = RecordingTransport()
        let issuer = ReceiptIssuer(controller: .init(piiController: "Example", contact: "DPO", address: "1 Road", email: "dpo@example.com", phone: "", piiControllerUrl: nil),
                                   jurisdiction: "EU", policyURL: "https://example.com/privacy")
        let composer = MailComposer(templates: try await MailTemplates(), settings: MailSettings(from: MailAddress("p@example.com"), organisation: "Example",
                                                                                               publicURL: { "http://127.0.0.1:8080" }), store: ledger.store,
                                    receipts: { id in try await ledger.receipt(eventID: id, issuer: issuer) })
        let worker = OutboxWorker(store: ledger.store, masterKey: ledger.masterKey, transport: transport, composer: composer)
        #expect(try await worker.runOnce() == 1)
        let link = try #require(transport.messages.first?.text.components(separatedBy: "/confirm/").last?.prefix { !$0.isWhitespace })
        let (_, result) = try await ledger.confirm(token: String(link), ipAddress: "192.0.2.1", userAgent: "test")
        let event = try #require(result?.events.first)
        #expect(try await worker.runOnce() == 1)
        let receiptMail = try #require(transport.messages.last)
        #expect(transport.messages.count == 2 && receiptMail.subject == "Ihre Einwilligungsquittung von Example")
        #expect(receiptMail.attachments.map(\.filename) == ["receipt-\(event.id.uuidString.lowercased()).jws", "receipt-\(event.id.uuidString.lowercased()).json"])
        let jws = String(decoding: try #require(receiptMail.attachments.first).data, as: UTF8.self)
        let payload = try #require(jws.split(separator: ".").dropFirst().first)
        var base64 = payload.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while !base64.count.isMultiple(of: 4) { base64 += "=" }
        let receipt = try JSONDecoder().decode(ConsentReceipt.self, from: try #require(Data(base64Encoded: base64)))
        #expect(receipt.consentReceiptID == event.id.uuidString.lowercased() && receipt.collectionMethod == "email_link")
        #expect(receipt.piiControllers.first?.email == "dpo@example.com" && receipt.services.first?.purposes.first?.purpose == "Invitations.")
        let raw = String(decoding: receiptMail.rendered(), as: UTF8.self)
        #expect(raw.contains("multipart/mixed") && raw.contains("Content-Disposition: attachment; filename=\"receipt-"))
    }

    @Test(arguments: StoreKind.available)
    func withdrawalsAndGrantsEmailReceiptsWhenConfigured(_ kind: StoreKind) async throws {
        var ledger = try await kind.makeLedger()
        ledger.receiptEmailActions = [.granted, .withdrawn]
        _ = try await ledger.createTopic(Topic(key: "events", title: "Events", createdAt: Date()), noticeText: "Invitations.")
        let contact = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: nil, externalID: nil, locale: nil)
        let granted = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [.init(topicKey: "events", intent: .optIn)], source: .staff,
                                                                  channel: .phone, actor: .staff("agent"), evidence: Evidence(personal: .init(note: "yes"))))
        let withdrawn = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [.init(topicKey: "events", intent: .optOut)], source: .api, actor: .apiKey("k")))
        let items = try await ledger.store.outboxItems(status: .pending, limit: 10)
        let receipts = try items.map { try ReceiptEmail.open($0, masterKey: ledger.masterKey).eventIDs }
        #expect(Set(receipts.flatMap { $0 }) == Set([granted.events[0].id, withdrawn.events[0].id]))
        ledger.receiptEmailActions = []
        _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [.init(topicKey: "events", intent: .optIn)], source: .api, actor: .apiKey("k")))
        #expect(try await ledger.store.outboxItems(status: .pending, limit: 10).count == 2)
    }
}

@Suite struct RepermissionEmailTests {
    @Test(arguments: StoreKind.available)
    func theEmailCarriesAWorkingRenewalLinkIsScrubbedAndSkipsAGrantThatChanged(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let ledger = try await kind.makeLedger(now: { clock.now })
        _ = try await ledger.createTopic(Topic(key: "events", title: "Events", consentLifetimeDays: 30, repermissionDaysBefore: 7, createdAt: Date()),
                                         noticeText: "Invitations to our events.")
        let jo = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: "Jo", externalID: nil, locale: "de-AT")
        let bo = try await ledger.createContact(email: EmailAddress("bo@example.com"), name: nil, externalID: nil, locale: nil)
        for c in [jo, bo] {
            _ = try await ledger.recordChange(ChangeRequest(contactID: c.id, changes: [.init(topicKey: "events", intent: .optIn)], source: .api, actor: .apiKey("k")))
        }
        let transport = RecordingTransport()
        let composer = MailComposer(templates: try await MailTemplates(), settings: MailSettings(from: MailAddress("p@example.com"), organisation: "Example",
                                                                                               publicURL: { "https://consent.example.org/" }), store: ledger.store)
        let worker = OutboxWorker(store: ledger.store, masterKey: ledger.masterKey, transport: transport, composer: composer, now: { clock.now })
        clock.now = clock.now.addingTimeInterval(24 * 86_400)
        #expect(try await ledger.queueRepermissions() == 2)
        // Bo withdraws before the email goes out: it is not sent.
        _ = try await ledger.recordChange(ChangeRequest(contactID: bo.id, changes: [.init(topicKey: "events", intent: .optOut)], source: .api, actor: .apiKey("k")))
        #expect(try await worker.runOnce() == 2)
        #expect(transport.messages.count == 1)
        let message = try #require(transport.messages.first)
        #expect(message.to.address == "jo@example.com" && message.subject == "Möchten Sie weiterhin Events von Example erhalten?", "German for de-AT")
        #expect(message.text.contains("Invitations to our events.") && message.html.contains("Ja, weiter senden"))
        #expect(message.headers.contains { $0.0 == "List-Unsubscribe" && $0.1.hasPrefix("<https://consent.example.org/p/") })
        let token = try #require(message.text.components(separatedBy: "https://consent.example.org/r/").last?.prefix { !$0.isWhitespace })
        #expect(try await ledger.renewal(token: String(token))?.contact.id == jo.id, "the emailed link works")
        let sent = try await ledger.store.outboxItems(status: .sent, limit: 10).filter { $0.kind == RepermissionEmail.kind }
        #expect(sent.count == 2)
        for item in sent {
            let email = try RepermissionEmail.open(item, masterKey: ledger.masterKey)
            #expect(email.token == "[sent]" && email.centreToken == "[sent]", "links act as the person: not kept once sent")
        }
    }
}
