import AssentCore
import AssentStore
import Foundation
import Logging
import ServiceLifecycle

/// Everything the worker needs to turn outbox items into emails.
public struct MailSettings: Sendable {
    /// The sender, e.g. `Example Ltd <privacy@example.com>`.
    public var from: MailAddress
    /// The organisation's name as people know it.
    public var organisation: String
    /// Where people reach this server, for links in emails; read at send time
    /// (a server started on port 0 learns its port only once listening).
    public var publicURL: @Sendable () -> String

    public init(from: MailAddress, organisation: String, publicURL: @escaping @Sendable () -> String) {
        self.from = from
        self.organisation = organisation
        self.publicURL = publicURL
    }
}

/// Builds the emails for outbox items from templates and the ledger.
public struct MailComposer: Sendable {
    public let templates: MailTemplates
    public let settings: MailSettings
    let store: any LedgerStore
    /// Signs a receipt for an event (the ledger's `receipt(eventID:issuer:)`).
    let receipts: (@Sendable (UUID) async throws -> (ConsentReceipt, String))?

    public init(templates: MailTemplates, settings: MailSettings, store: any LedgerStore,
                receipts: (@Sendable (UUID) async throws -> (ConsentReceipt, String))? = nil) {
        self.templates = templates
        self.settings = settings
        self.store = store
        self.receipts = receipts
    }

    /// The person's signed receipts, summarised in the text and attached as `.jws` and `.json` files.
    public func receipt(_ email: ReceiptEmail, messageID: String, date: Date) async throws -> MailMessage {
        guard let receipts else { throw MailError.permanent("this server cannot sign receipts") }
        let locale = templates.locale(for: email.locale)
        var rows: [[String: Any]] = []
        var attachments: [MailMessage.Attachment] = []
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        for id in email.eventIDs {
            let (receipt, jws) = try await receipts(id)
            let when = Date(timeIntervalSince1970: TimeInterval(receipt.consentTimestamp))
                .formatted(Date.FormatStyle(date: .long, time: .shortened, locale: Locale(identifier: locale), timeZone: TimeZone(identifier: "UTC")!)) + " UTC"
            rows.append(["service": receipt.services.first?.service ?? "", "state": receipt.assentEvent.toState, "when": when,
                         "id": receipt.consentReceiptID, "purpose": receipt.services.first?.purposes.first?.purpose ?? ""])
            attachments.append(.init(filename: "receipt-\(receipt.consentReceiptID).jws", contentType: "application/jose", data: Data(jws.utf8)))
            attachments.append(.init(filename: "receipt-\(receipt.consentReceiptID).json", contentType: "application/json", data: try encoder.encode(receipt)))
        }
        var model: [String: Any] = ["organisation": settings.organisation, "receipts": rows, "jwks": settings.publicURL() + "/.well-known/jwks.json"]
        if let name = email.name { model["name"] = name }
        var message = MailMessage(
            from: settings.from, to: MailAddress(email.to, name: email.name),
            subject: try templates.render("receipt", part: "subject", locale: locale, model: model).trimmingCharacters(in: .whitespacesAndNewlines),
            text: try templates.render("receipt", part: "text", locale: locale, model: model),
            html: try templates.render("receipt", part: "html", locale: locale, model: model),
            messageID: messageID, date: date)
        message.attachments = attachments
        return message
    }

    public func confirmationLink(token: String) -> String {
        let base = settings.publicURL()
        return (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/confirm/\(token)"
    }

    public func portalLink(token: String) -> String {
        let base = settings.publicURL()
        return (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/portal/signin/\(token)"
    }

    func link(_ path: String) -> String {
        let base = settings.publicURL()
        return (base.hasSuffix("/") ? String(base.dropLast()) : base) + path
    }

    /// Asks the person whether to keep sending a topic whose consent is about to expire.
    public func repermission(_ email: RepermissionEmail, messageID: String, date: Date) async throws -> MailMessage {
        let locale = templates.locale(for: email.locale)
        guard let topic = try await store.topic(key: email.topicKey) else { throw MailError.permanent("topic '\(email.topicKey)' no longer exists") }
        let notice = try await store.notice(topicKey: topic.key, version: topic.currentNoticeVersion)
        let expires = email.expiresAt.formatted(Date.FormatStyle(date: .long, time: .omitted, locale: Locale(identifier: locale),
                                                                  timeZone: TimeZone(identifier: "UTC")!))
        var model: [String: Any] = ["organisation": settings.organisation, "topic": topic.title, "notice": notice?.text ?? "",
                                    "link": link("/r/\(email.token)"), "centre": link("/p/\(email.centreToken)"), "expires": expires]
        if let days = topic.consentLifetimeDays { model["lifetime"] = days }
        if let name = email.name { model["name"] = name }
        var message = MailMessage(
            from: settings.from, to: MailAddress(email.to, name: email.name),
            subject: try templates.render("repermission", part: "subject", locale: locale, model: model).trimmingCharacters(in: .whitespacesAndNewlines),
            text: try templates.render("repermission", part: "text", locale: locale, model: model),
            html: try templates.render("repermission", part: "html", locale: locale, model: model),
            messageID: messageID, date: date)
        message.headers = [("List-Unsubscribe", "<\(link("/p/\(email.centreToken)"))>")]
        return message
    }

    /// The portal's single-use sign-in email.
    public func portalSignIn(_ email: PortalLinkEmail, messageID: String, date: Date) throws -> MailMessage {
        let locale = templates.locale(for: email.locale)
        let expires = email.expiresAt.formatted(Date.FormatStyle(date: .long, time: .shortened, locale: Locale(identifier: locale),
                                                                  timeZone: TimeZone(identifier: "UTC")!)) + " UTC"
        var model: [String: Any] = ["organisation": settings.organisation, "link": portalLink(token: email.token), "expires": expires]
        if let name = email.name { model["name"] = name }
        return MailMessage(
            from: settings.from, to: MailAddress(email.to, name: email.name),
            subject: try templates.render("signin", part: "subject", locale: locale, model: model).trimmingCharacters(in: .whitespacesAndNewlines),
            text: try templates.render("signin", part: "text", locale: locale, model: model),
            html: try templates.render("signin", part: "html", locale: locale, model: model),
            messageID: messageID, date: date)
    }

    public func confirmation(_ email: ConfirmationEmail, messageID: String, date: Date) async throws -> MailMessage {
        let locale = templates.locale(for: email.locale)
        var topics: [[String: Any]] = []
        for key in email.topics {
            guard let topic = try await store.topic(key: key) else { continue }
            let notice = try await store.notice(topicKey: key, version: topic.currentNoticeVersion)
            topics.append(["title": topic.title, "notice": notice?.text ?? ""])
        }
        let expires = email.expiresAt.formatted(Date.FormatStyle(date: .long, time: .shortened, locale: Locale(identifier: locale),
                                                                  timeZone: TimeZone(identifier: "UTC")!)) + " UTC"
        var model: [String: Any] = ["organisation": settings.organisation, "topics": topics, "link": confirmationLink(token: email.token),
                                    "expires": expires]
        if let name = email.name { model["name"] = name }
        return MailMessage(
            from: settings.from, to: MailAddress(email.to, name: email.name),
            subject: try templates.render("confirmation", part: "subject", locale: locale, model: model).trimmingCharacters(in: .whitespacesAndNewlines),
            text: try templates.render("confirmation", part: "text", locale: locale, model: model),
            html: try templates.render("confirmation", part: "html", locale: locale, model: model),
            messageID: messageID, date: date)
    }
}

/// Drains the outbox: claims due items, sends them, and records the outcome.
/// Runs in every `assent serve`; several instances share the work safely
/// (claims are exclusive and leased). A failed send is retried on the
/// schedule of `OutboxItem.retryDelay`, then left dead for `assent outbox retry`.
public struct OutboxWorker: Service {
    let store: any LedgerStore
    let masterKey: MasterKey
    let transport: any MailTransport
    let composer: MailComposer
    let now: @Sendable () -> Date
    let logger: Logger
    public var pollInterval: Duration = .seconds(1)
    /// Small batches keep every claimed item well inside its lease.
    public var batchSize = 5

    public init(store: any LedgerStore, masterKey: MasterKey, transport: any MailTransport, composer: MailComposer,
                now: @escaping @Sendable () -> Date = { Date() }, logger: Logger = Logger(label: "assent.outbox")) {
        self.store = store
        self.masterKey = masterKey
        self.transport = transport
        self.composer = composer
        self.now = now
        self.logger = logger
    }

    /// Processes the items due now; returns how many it attempted.
    @discardableResult
    public func runOnce() async throws -> Int {
        let at = now()
        let items = try await store.claimOutbox(now: at, limit: batchSize, lease: OutboxItem.claimLease)
        for item in items {
            await process(item, at: at)
        }
        return items.count
    }

    private func process(_ item: OutboxItem, at: Date) async {
        do {
            let domain = composer.settings.from.address.split(separator: "@").last.map(String.init) ?? "assent.invalid"
            let messageID = "\(item.id.uuidString.lowercased())@\(domain)"
            switch item.kind {
            case ConfirmationEmail.kind:
                let email = try ConfirmationEmail.open(item, masterKey: masterKey)
                let scrubbed = try email.scrubbed(masterKey: masterKey, itemID: item.id)
                // A link replaced, used or expired since it was queued is not worth sending.
                guard case .valid = try await linkStatus(email.token) else {
                    logger.info("skipped \(item.kind) \(item.id): its link is no longer valid")
                    return await complete(item, payload: scrubbed)
                }
                try await transport.send(try await composer.confirmation(email, messageID: messageID, date: at))
                await complete(item, payload: scrubbed)
            case PortalLinkEmail.kind:
                let email = try PortalLinkEmail.open(item, masterKey: masterKey)
                let scrubbed = try email.scrubbed(masterKey: masterKey, itemID: item.id)
                // A sign-in link that expired or was used before it could be sent is not worth sending.
                guard let link = try await store.portalLink(hash: APIKey.hash(secret: email.token)), link.usedAt == nil, link.expiresAt > now() else {
                    logger.info("skipped \(item.kind) \(item.id): its link is no longer valid")
                    return await complete(item, payload: scrubbed)
                }
                try await transport.send(try composer.portalSignIn(email, messageID: messageID, date: at))
                await complete(item, payload: scrubbed)
            case RepermissionEmail.kind:
                let email = try RepermissionEmail.open(item, masterKey: masterKey)
                let scrubbed = try email.scrubbed(masterKey: masterKey, itemID: item.id)
                guard try await email.stillDue(in: store, masterKey: masterKey, at: now()) else {
                    logger.info("skipped \(item.kind) \(item.id): the grant, address, topic or link changed meanwhile")
                    return await complete(item, payload: scrubbed)
                }
                try await transport.send(try await composer.repermission(email, messageID: messageID, date: at))
                await complete(item, payload: scrubbed)
            case ReceiptEmail.kind:
                let email = try ReceiptEmail.open(item, masterKey: masterKey)
                try await transport.send(try await composer.receipt(email, messageID: messageID, date: at))
                await complete(item, payload: item.payload)
            default:
                throw MailError.permanent("unknown outbox kind '\(item.kind)'")
            }
        } catch {
            let permanent: Bool = if case MailError.permanent = error { true } else { false }
            let retryAt = permanent ? nil : OutboxItem.retryDelay(afterAttempt: item.attempts).map { at.addingTimeInterval($0) }
            let reason = String(describing: error).prefix(1_000)
            logger.warning("\(item.kind) \(item.id) attempt \(item.attempts) failed: \(reason)\(retryAt == nil ? "; giving up (dead)" : "")")
            do {
                try await store.failOutbox(id: item.id, error: String(reason), retryAt: retryAt)
            } catch {
                // The lease runs out and another attempt will claim it.
                logger.error("could not record the failure of \(item.id): \(error)")
            }
        }
    }

    /// Records a sent item. A failure here must not count as a failed send
    /// (that would send it again): retry a few times, then leave it to the
    /// lease, logging loudly.
    private func complete(_ item: OutboxItem, payload: Data) async {
        for attempt in 1...3 {
            do {
                try await store.completeOutbox(id: item.id, at: now(), payload: payload)
                logger.info("sent \(item.kind) \(item.id) to contact \(item.contactID?.uuidString.lowercased() ?? "-")")
                return
            } catch {
                logger.error("sent \(item.id) but could not record it (attempt \(attempt)): \(error)")
                try? await Task.sleep(for: .milliseconds(200 * attempt))
            }
        }
    }

    private func linkStatus(_ token: String) async throws -> Ledger.LinkStatus {
        guard let record = try await store.confirmationToken(hash: ConfirmationToken.hash(token)) else { return .unknown }
        return record.status(at: now())
    }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let processed: Int
                do {
                    processed = try await runOnce()
                } catch {
                    if Task.isCancelled { // the server is stopping: not a failure
                        logger.debug("outbox poll stopped as the server stopped: \(error)")
                        break
                    }
                    logger.error("outbox poll failed: \(error)")
                    processed = 0
                }
                if processed == 0 {
                    try? await Task.sleep(for: pollInterval)
                }
            }
        }
    }
}
