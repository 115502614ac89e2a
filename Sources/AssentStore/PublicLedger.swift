import AssentCore
import Crypto
import Foundation

/// A post to a form, as the page or JSON client sent it (honeypot already checked).
public struct FormSubmission: Sendable {
    public var formID: String
    /// The form version the page showed (hidden field); nil = the current one.
    public var formVersion: Int?
    public var email: String?
    public var name: String?
    public var locale: String?
    /// The topics ticked.
    public var chosenTopics: [String]
    /// The person, when the form was opened from their own signed link.
    public var contactID: UUID?
    public var ipAddress: String?
    public var userAgent: String?

    public init(formID: String, formVersion: Int? = nil, email: String? = nil, name: String? = nil, locale: String? = nil,
                chosenTopics: [String], contactID: UUID? = nil, ipAddress: String? = nil, userAgent: String? = nil) {
        self.formID = formID
        self.formVersion = formVersion
        self.email = email
        self.name = name
        self.locale = locale
        self.chosenTopics = chosenTopics
        self.contactID = contactID
        self.ipAddress = ipAddress
        self.userAgent = userAgent
    }
}

public struct FormSubmissionResult: Sendable {
    /// The form version that was shown and is named in the events.
    public var form: Form
    public var contact: Contact
    public var createdContact: Bool
    public var change: ChangeResult
}

/// A topic as the person saw it on a page: its key and the notice version printed.
public struct ShownTopic: Sendable, Equatable {
    public var key: String
    public var noticeVersion: Int?

    public init(key: String, noticeVersion: Int?) {
        self.key = key
        self.noticeVersion = noticeVersion
    }
}

extension Ledger {
    // MARK: Forms

    /// Saves a new form as version 1; topic notice versions left open are pinned to the current ones.
    public func createForm(id: String, definition: FormDefinition) async throws -> Form {
        var problems: [ValidationError] = []
        do { try Topic.validateKey(id, field: "id") } catch let DomainError.invalid(e) { problems += e }
        var pinned = definition
        do { pinned = try await checked(definition) } catch let DomainError.invalid(e) { problems += e }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
        let at = now
        let form = Form(id: id, version: 1, definition: pinned, createdAt: at)
        do {
            try await store.insertForm(form)
        } catch StoreError.duplicate {
            throw DomainError.conflict(field: "id", message: "a form with id '\(id)' already exists")
        }
        return form
    }

    public func existingForm(_ id: String) async throws -> Form {
        guard let form = try await store.form(id: id) else { throw DomainError.notFound(what: "form", id: id) }
        return form
    }

    /// Applies `edit` and saves the result as the next version; an edit that
    /// changes nothing saves nothing. Earlier versions stay as they were.
    public func updateForm(id: String, _ edit: (inout FormDefinition) -> Void) async throws -> Form {
        for _ in 0..<8 {
            let current = try await existingForm(id)
            var definition = current.definition
            edit(&definition)
            definition = try await checked(definition)
            if definition == current.definition { return current }
            let next = Form(id: id, version: current.version + 1, status: current.status, definition: definition,
                            createdAt: current.createdAt, versionCreatedAt: now)
            do {
                try await store.appendFormVersion(next)
                return next
            } catch StoreError.duplicate {
                continue // another admin saved meanwhile: apply the edit to theirs
            }
        }
        throw DomainError.conflict(field: "id", message: "form '\(id)' is being changed concurrently; try again")
    }

    /// Retires a form: its page and posts answer "no longer available"; its history stays.
    public func retireForm(id: String) async throws -> Form {
        var form = try await existingForm(id)
        guard form.isActive else { return form }
        try await store.setFormStatus(id: id, status: .retired, at: now)
        form.status = .retired
        return form
    }

    /// Checks the definition's shape and that every topic exists and is
    /// active, reporting all problems at once, and pins open notice versions
    /// to the current ones.
    private func checked(_ definition: FormDefinition) async throws -> FormDefinition {
        var definition = definition
        var problems: [ValidationError] = []
        do { try definition.validate() } catch let DomainError.invalid(e) { problems += e }
        for i in definition.topics.indices where (try? Topic.validateKey(definition.topics[i].key)) != nil {
            let field = "topics[\(i)]"
            guard let topic = try await store.topic(key: definition.topics[i].key) else {
                problems.append(.init(field: "\(field).key", "unknown topic '\(definition.topics[i].key)'"))
                continue
            }
            guard topic.isActive else {
                problems.append(.init(field: "\(field).key", "topic '\(topic.key)' is retired"))
                continue
            }
            if let version = definition.topics[i].noticeVersion {
                if !(1...topic.currentNoticeVersion).contains(version) {
                    problems.append(.init(field: "\(field).noticeVersion", "topic '\(topic.key)' has notice versions 1...\(topic.currentNoticeVersion), not \(version)"))
                }
            } else {
                definition.topics[i].noticeVersion = topic.currentNoticeVersion
            }
        }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
        return definition
    }

    /// Records a form post through the one write path with source `form`,
    /// the form id and the version the page showed. A new email becomes a
    /// contact; opt-ins are confirmed by email when the form or topic asks.
    public func submitForm(_ submission: FormSubmission) async throws -> FormSubmissionResult {
        let current = try await existingForm(submission.formID)
        guard current.isActive else { throw DomainError.gone(what: "form", id: current.id) }
        var shown = current
        if let version = submission.formVersion, version != current.version {
            guard let old = try await store.form(id: current.id, version: version) else {
                throw DomainError.invalid(field: "formVersion", "form '\(current.id)' has versions 1...\(current.version), not \(version)")
            }
            shown = old
        }
        // What the form does (its topics, double opt-in, kind) is the current
        // version's: an old page cannot bring back a removed topic or a looser
        // rule. The version shown is kept as evidence, with its notice versions.
        let offered = current.definition.topics.filter { topic in shown.definition.topics.contains { $0.key == topic.key } }
            .map { topic in shown.definition.topics.first { $0.key == topic.key } ?? topic }
        var problems: [ValidationError] = []
        // Without the person's own link, a preferences form can only add (as a signup form does).
        let knownPerson = submission.contactID != nil
        // Problems in the order the form shows its fields: address first, then topics.
        var email: EmailAddress?
        if !knownPerson {
            if let text = submission.email?.trimmingCharacters(in: .whitespaces), !text.isEmpty {
                do { email = try EmailAddress(text) } catch let DomainError.invalid(e) { problems += e }
            } else {
                problems.append(.init(field: "email", "is required"))
            }
            if let name = submission.name, !name.isEmpty {
                do { try TextCheck.check(name, field: "name", max: Limits.nameLength) } catch let DomainError.invalid(e) { problems += e }
            }
        }
        let unknown = submission.chosenTopics.filter { key in !offered.contains { $0.key == key } }
        if !unknown.isEmpty {
            problems.append(.init(field: "topics", "\(unknown.map { "'\($0.prefix(64))'" }.joined(separator: ", ")) not offered by this form"))
        }
        if submission.chosenTopics.isEmpty && !(current.definition.kind == .preferences && knownPerson) {
            problems.append(.init(field: "topics", "choose at least one topic"))
        }
        if !problems.isEmpty { throw DomainError.invalid(problems) }

        var created = false
        let contact: Contact
        if let id = submission.contactID {
            contact = try await existingContact(id)
        } else if let email, let existing = try await store.contact(email: email) {
            contact = existing
        } else if let email {
            let name = submission.name.flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0.trimmingCharacters(in: .whitespaces) }
            do {
                // The person signing up themselves is fresh consent: a suppressed (erased) address may come back this way.
                contact = try await createContact(email: email, name: name, externalID: nil, locale: Self.plausibleLocale(submission.locale), bySubject: true)
                created = true
            } catch DomainError.conflict {
                // Another post for the same address won the race.
                guard let winner = try await store.contact(email: email) else {
                    throw DomainError.conflict(field: "email", message: "this address is being registered by another request; try again")
                }
                contact = winner
            }
        } else {
            throw DomainError.invalid(field: "email", "is required")
        }

        // Topics retired since the page was printed are left out, not refused.
        var active: [ShownTopic] = []
        for topic in offered {
            if try await store.topic(key: topic.key)?.isActive == true { active.append(ShownTopic(key: topic.key, noticeVersion: topic.noticeVersion)) }
        }
        let chosen = Set(submission.chosenTopics)
        let evidence = Evidence(formID: shown.id, formVersion: shown.version,
                                personal: .observed(ipAddress: submission.ipAddress, userAgent: submission.userAgent))
        let change: ChangeResult
        if current.definition.kind == .preferences && knownPerson {
            change = try await applyChoices(contactID: contact.id, shown: active, chosen: chosen, source: .form, evidence: evidence,
                                            requireConfirmation: current.definition.doubleOptIn)
        } else {
            let changes = active.filter { chosen.contains($0.key) }.map { TopicChange(topicKey: $0.key, intent: .optIn, noticeVersion: $0.noticeVersion) }
            change = changes.isEmpty
                ? ChangeResult(contactID: contact.id, events: [], unchanged: [], preferences: try await store.preferences(contactID: contact.id))
                : try await recordChange(ChangeRequest(contactID: contact.id, changes: changes, source: .form, actor: .subject,
                                                       evidence: evidence, changesField: "topics", requireConfirmation: current.definition.doubleOptIn))
        }
        return FormSubmissionResult(form: shown, contact: try await existingContact(contact.id), createdContact: created, change: change)
    }

    static func plausibleLocale(_ text: String?) -> String? {
        guard let text, !text.isEmpty else { return nil }
        let probe = Contact(id: UUID.random(), email: try! EmailAddress("probe@example.org"), locale: text, createdAt: Date())
        return (try? probe.validate()) == nil ? nil : text
    }

    // MARK: The person's own choices

    /// Turns a page of checkboxes into changes: a ticked box that is not yet
    /// Yes opts in; an unticked box that is Yes or pending withdraws. A box
    /// left ticked on a pending topic stays pending (confirming is done from
    /// the email), so saving a page is never taken as a new yes by itself.
    public func applyChoices(contactID: UUID, shown: [ShownTopic], chosen: Set<String>, source: ConsentSource,
                             evidence: Evidence, requireConfirmation: Bool = false) async throws -> ChangeResult {
        let at = now
        let state = try await store.ledgerState(contactID: contactID)
        var changes: [TopicChange] = []
        for topic in shown {
            let current = state.preferences[topic.key]?.effectiveState(at: at) ?? .none
            let yes = current == .granted || current == .pending
            if chosen.contains(topic.key) && !yes {
                changes.append(TopicChange(topicKey: topic.key, intent: .optIn, noticeVersion: topic.noticeVersion))
            } else if !chosen.contains(topic.key) && yes {
                changes.append(TopicChange(topicKey: topic.key, intent: .optOut, noticeVersion: topic.noticeVersion))
            }
        }
        guard !changes.isEmpty else {
            return ChangeResult(contactID: contactID, events: [], unchanged: [], preferences: Array(state.preferences.values))
        }
        return try await recordChange(ChangeRequest(contactID: contactID, changes: changes, source: source, actor: .subject,
                                                    evidence: evidence, changesField: "topics", requireConfirmation: requireConfirmation))
    }

    /// Withdraws one topic, or every topic that is Yes or pending (nil), for
    /// an unsubscribe link or an "unsubscribe from everything" button.
    public func withdraw(contactID: UUID, topicKey: String?, source: ConsentSource, channel: StaffChannel? = nil, evidence: Evidence,
                         actor: Actor = .subject) async throws -> ChangeResult {
        let at = now
        let state = try await store.ledgerState(contactID: contactID)
        let keys = state.preferences.values
            .filter { topicKey == nil || $0.topicKey == topicKey }
            .filter { [.granted, .pending].contains($0.effectiveState(at: at)) }
            .map(\.topicKey).sorted()
        guard !keys.isEmpty else {
            return ChangeResult(contactID: contactID, events: [], unchanged: [], preferences: Array(state.preferences.values))
        }
        return try await recordChange(ChangeRequest(contactID: contactID, changes: keys.map { TopicChange(topicKey: $0, intent: .optOut) },
                                                    source: source, channel: channel, actor: actor, evidence: evidence, changesField: "topics"))
    }

    // MARK: Signed links

    static let linkKeyPurpose = "contact-links/v1"

    /// The token of a contact's preference-centre or unsubscribe link (the
    /// contact's link secret is made on first use).
    public func linkToken(_ link: ContactLink) async throws -> String {
        _ = try await existingContact(link.contactID)
        return link.token(secret: try await linkSecret(link.contactID), signer: linkSigner)
    }

    /// A known contact's preference-centre and unsubscribe tokens with one
    /// secret lookup (an audience export makes them for every row).
    public func linkTokens(for contact: Contact, unsubscribeTopic: String?) async throws -> (centre: String, unsubscribe: String) {
        tokenPair(contact.id, secret: try await linkSecret(contact.id), unsubscribeTopic: unsubscribeTopic)
    }

    private func tokenPair(_ id: UUID, secret: Data, unsubscribeTopic: String?) -> (centre: String, unsubscribe: String) {
        (ContactLink(purpose: .preferenceCentre, contactID: id).token(secret: secret, signer: linkSigner),
         ContactLink(purpose: .unsubscribe, contactID: id, topicKey: unsubscribeTopic).token(secret: secret, signer: linkSigner))
    }

    /// The same for many contacts (an audience page): their secrets read, and the missing
    /// ones made, together, instead of a durable write per contact on a first export.
    public func linkTokens(for contacts: [Contact], unsubscribeTopic: String?) async throws -> [UUID: (centre: String, unsubscribe: String)] {
        // A secret is drawn only for a contact without one (drawing one per row was a twentieth of an export).
        let secrets = try await store.ensureLinkSecrets(contacts.map(\.id), at: now) { Self.randomSecret() }
        var tokens: [UUID: (centre: String, unsubscribe: String)] = [:]
        for contact in contacts {
            guard let secret = secrets[contact.id] else { continue }
            tokens[contact.id] = tokenPair(contact.id, secret: secret, unsubscribeTopic: unsubscribeTopic)
        }
        return tokens
    }

    /// The link secrets of an audience page: those read with the page, and for members without one
    /// (contacts made before secrets were made with the contact) one made now, for all of those together.
    /// A member erased meanwhile has none and is left out by the caller.
    public func linkSecrets(for members: [AudienceMember]) async throws -> [Data?] {
        let missing = members.filter { $0.linkSecret == nil }.map(\.contact.id)
        guard !missing.isEmpty else { return members.map(\.linkSecret) }
        let made = try await store.ensureLinkSecrets(missing, at: now) { Self.randomSecret() }
        return members.map { $0.linkSecret ?? made[$0.contact.id] }
    }

    /// Appends the text of a contact's preference-centre or unsubscribe token to `out` (an export's hot path).
    public func appendLinkToken(_ link: ContactLink, secret: Data, to out: inout [UInt8]) {
        link.appendToken(to: &out, secret: secret, signer: linkSigner)
    }

    /// The same with the secret's bytes where they lie.
    public func appendLinkToken(_ link: ContactLink, secret: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        link.appendToken(to: &out, secret: secret, signer: linkSigner)
    }

    /// Secrets for the rows of a page that have none yet (made and stored now), by row index.
    public func linkSecrets(forRowsOf page: AudienceRowsPage) async throws -> [Int: Data] {
        let missing = page.rows.indices.filter { page.rows[$0].secret == nil }
        guard !missing.isEmpty else { return [:] }
        let made = try await store.ensureLinkSecrets(missing.map { page.rows[$0].id }, at: now) { Self.randomSecret() }
        var secrets: [Int: Data] = [:]
        for row in missing { secrets[row] = made[page.rows[row].id] }
        return secrets
    }

    /// The contact's link secret, made on first use.
    private func linkSecret(_ contactID: UUID) async throws -> Data {
        if let stored = try await store.linkSecret(contactID: contactID) { return stored }
        return try await store.ensureLinkSecret(contactID: contactID, candidate: Self.randomSecret(), at: now)
    }

    /// Revokes every preference-centre and unsubscribe link of a contact.
    public func rotateLinks(contactID: UUID) async throws {
        if try await existingContact(contactID).isErased { throw DomainError.gone(what: "contact", id: contactID.uuidString.lowercased()) }
        try await store.replaceLinkSecret(contactID: contactID, secret: Self.randomSecret(), at: now)
    }

    /// The link and contact a token stands for; nil for anything not made by
    /// this instance for this purpose under the contact's current secret.
    public func resolveLink(_ token: String, purpose: ContactLink.Purpose) async throws -> (link: ContactLink, contact: Contact)? {
        guard let (link, mac) = ContactLink.parse(token, purpose: purpose),
              let secret = try await store.linkSecret(contactID: link.contactID),
              link.verify(mac: mac, secret: secret, signer: linkSigner),
              let contact = try await store.contact(id: link.contactID) else { return nil }
        return (link, contact)
    }

    static func randomSecret() -> Data {
        SecureRandom.bytes(32)
    }
}
