import AssentCore
import Crypto
import Foundation

extension Ledger {
    /// The keyed hash of an email on the suppression list: HMAC-SHA256 under a
    /// key derived from the master key, so the list reveals no address to
    /// someone holding only the database.
    public func suppressionHash(_ email: EmailAddress) -> Data {
        var mac = suppressionMAC
        var value = email.value
        value.withUTF8 { mac.update(data: UnsafeRawBufferPointer($0)) }
        return Data(mac.finalize())
    }

    /// Erases a person (GDPR Art. 17) and keeps the proof:
    /// 1. every topic that is Yes or pending is withdrawn, by Assent itself
    ///    (source `system`), so nothing can be sent to them;
    /// 2. in one transaction their email, name, external id and language go,
    ///    their evidence key is deleted (the evidence sealed in their events
    ///    becomes unreadable; the chain, which hashes the ciphertext, still
    ///    verifies), their links, sign-ins, queued emails and request notes
    ///    go, and a keyed hash of the email joins the suppression list;
    /// 3. the audit log records who erased whom and why, and open erasure
    ///    requests of the contact are closed.
    /// Counts and reports stay right: the events' non-personal skeleton stays.
    public func eraseContact(_ id: UUID, reason: String, erasedBy: String, actor: StaffUser? = nil, ipAddress: String? = nil) async throws -> Contact {
        let contact = try await existingContact(id)
        guard !contact.isErased else { return contact }
        let reason = reason.trimmingCharacters(in: .whitespacesAndNewlines)
        if reason.isEmpty { throw DomainError.invalid(field: "reason", "is required: why the data is erased (e.g. the person's request of 2026-11-29)") }
        try TextCheck.check(reason, field: "reason", max: Limits.noteLength, allowNewlines: true)
        _ = try await withdraw(contactID: id, topicKey: nil, source: .system, evidence: Evidence(), actor: .system)
        let at = now
        var erasure = ContactErasure(contactID: id, at: at, emailHash: suppressionHash(contact.email), email: contact.email.value,
                                     reason: reason, erasedBy: erasedBy)
        // Downstream systems are told who to delete (the email leaves the delivery log once delivered).
        // Due only after any attempt of the messages it replaces has ended (they are deleted,
        // but one may be in flight), so that it is the last thing a receiver hears.
        erasure.webhooks = try await webhookDeliveries(.contactErased, contact: contact, at: at,
                                                       data: ["contact": WebhookPayload.contact(contact), "erasedAt": WebhookPayload.iso(at)])
            .map { var d = $0; d.nextAttemptAt = at.addingTimeInterval(WebhookDelivery.claimLease); return d }
        try await store.eraseContact(erasure)
        try await audit(actor, "erase_contact", actorEmail: erasedBy, target: "contact:\(id.uuidString.lowercased())", detail: reason, ipAddress: ipAddress)
        for request in try await store.subjectRequests(contactID: id, status: .open, limit: 100) where request.kind == .erasure {
            try await store.closeSubjectRequest(id: request.id, at: now, outcome: "erased")
        }
        return try await existingContact(id)
    }

    /// Records an objection to all direct marketing (GDPR Art. 21): every
    /// topic is withdrawn with the given source and evidence, and from now on
    /// only the person's own opt-in can change it.
    public func objectToMarketing(_ id: UUID, source: ConsentSource, channel: StaffChannel? = nil, actor: Actor, evidence: Evidence) async throws -> ChangeResult {
        let contact = try await existingContact(id)
        if contact.isErased { throw DomainError.gone(what: "contact", id: id.uuidString.lowercased()) }
        let result = try await withdraw(contactID: id, topicKey: nil, source: source, channel: channel, evidence: evidence, actor: actor)
        if contact.objectedAt == nil { try await store.setContactObjection(contactID: id, at: now) }
        return result
    }
}

extension Date {
    /// `2026-11-29`, for messages.
    var isoDay: String {
        UTCTime.day(self)
    }
}
