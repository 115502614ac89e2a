import AssentCore
import AssentStore
import Foundation
import HTTPTypes
import Hummingbird

/// The preference centre (`/p/{token}`) and one-click unsubscribe
/// (`/u/{token}`, RFC 8058). Both are opened from signed links in emails; a
/// GET only shows, a POST changes, through the one write path with source
/// `preference_centre` or `one_click_unsubscribe` and the person as actor.
struct PreferencePages: Sendable {
    let ledger: Ledger
    let pages: Pages
    let limiter: RateLimiter

    static let maxBody = 16 * 1024

    // MARK: Preference centre

    func showCentre(_ request: Request, _ context: AssentRequestContext) async -> Response {
        let fallback = pages.language(request: request)
        do {
            guard let (_, contact) = try await resolve(context, .preferenceCentre) else { return linkInvalid(fallback) }
            let language = pages.language(contact.locale, request: request)
            return try await centre(contact, language: language, token: try context.parameters.require("token"), status: [], errors: [])
        } catch {
            return pages.failure(error, language: fallback, request: request, context: context)
        }
    }

    func saveCentre(_ request: Request, _ context: AssentRequestContext) async -> Response {
        var request = request
        let fallback = pages.language(request: request)
        do {
            guard let (_, contact) = try await resolve(context, .preferenceCentre) else { return await refuseLink(context, language: fallback) }
            let language = pages.language(contact.locale, request: request)
            let token = try context.parameters.require("token")
            let form = FormBody(try await request.collectText(upTo: Self.maxBody))
            let evidence = Evidence(personal: PersonalEvidence.observed(ipAddress: context.remoteIP,
                                                               userAgent: request.headers[.userAgent]))
            do {
                let result: ChangeResult
                var status: [String]
                if form.value("action") == "unsubscribe-all" {
                    result = try await ledger.withdraw(contactID: contact.id, topicKey: nil, source: .preferenceCentre, evidence: evidence)
                    status = [pages.word(result.events.isEmpty ? "nothingChanged" : "unsubscribedAll", language)]
                } else {
                    let shown = try Self.shownTopics(form.values("shown"))
                    result = try await ledger.applyChoices(contactID: contact.id, shown: shown, chosen: Set(form.values("topic")),
                                                           source: .preferenceCentre, evidence: evidence)
                    status = [pages.word(result.events.isEmpty ? "nothingChanged" : "saved", language)]
                    if !result.confirmationRequestedFor.isEmpty { status.append(pages.word("savedPending", language)) }
                }
                return try await centre(contact, language: language, token: token, status: status, errors: [])
            } catch DomainError.invalid(let errors) {
                context.logger.info("choices refused (page out of date?): \(errors.map(\.description).joined(separator: "; "))")
                return try await centre(contact, language: language, token: token, status: [], errors: [pages.word("pageOutdated", language)],
                                        httpStatus: .unprocessableContent)
            }
        } catch {
            return pages.failure(error, language: fallback, request: request, context: context)
        }
    }

    /// `shown` fields are `topic:noticeVersion`: what the page printed, recorded as evidence.
    static func shownTopics(_ values: [String]) throws -> [ShownTopic] {
        try values.map { value in
            let parts = value.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2, let version = Int(parts[1]), version >= 1, (try? Topic.validateKey(parts[0])) != nil else {
                throw DomainError.invalid(field: "shown", "'\(value.prefix(80))' is not a topic and notice version")
            }
            return ShownTopic(key: parts[0], noticeVersion: version)
        }
    }

    private func centre(_ contact: Contact, language: String, token: String, status: [String], errors: [String],
                        httpStatus: HTTPResponse.Status = .ok) async throws -> Response {
        let categories = try await pages.preferenceCategories(ledger: ledger, contactID: contact.id, language: language)
        let model: [String: Any] = [
            "title": pages.word("centreTitle", language), "email": contact.email.value, "action": "/p/\(token)",
            "categories": categories,
            "hasStatus": !status.isEmpty, "status": status, "hasErrors": !errors.isEmpty, "errors": errors,
        ]
        return pages.render("centre", language: language, status: httpStatus, model: model)
    }

    // MARK: One-click unsubscribe

    /// Shows what the link unsubscribes from and a button. Never changes
    /// anything: mail scanners and link previews follow GET links.
    func showUnsubscribe(_ request: Request, _ context: AssentRequestContext) async -> Response {
        let fallback = pages.language(request: request)
        do {
            guard let (link, contact) = try await resolve(context, .unsubscribe) else { return linkInvalid(fallback) }
            let language = pages.language(contact.locale, request: request)
            var model: [String: Any] = [
                "title": pages.word("unsubscribeTitle", language), "email": contact.email.value,
                "action": "/u/\(try context.parameters.require("token"))",
            ]
            if let key = link.topicKey { model["topic"] = ["title": try await ledger.store.topic(key: key)?.title ?? key] }
            return pages.render("unsubscribe", language: language, model: model)
        } catch {
            return pages.failure(error, language: fallback, request: request, context: context)
        }
    }

    /// The RFC 8058 POST (from a mail client, with body
    /// `List-Unsubscribe=One-Click`) or the page's button: withdraws at once.
    func unsubscribe(_ request: Request, _ context: AssentRequestContext) async -> Response {
        var request = request
        let fallback = pages.language(request: request)
        do {
            guard let (link, contact) = try await resolve(context, .unsubscribe) else { return await refuseLink(context, language: fallback) }
            let language = pages.language(contact.locale, request: request)
            _ = try await request.collectText(upTo: Self.maxBody)
            let result = try await ledger.withdraw(
                contactID: contact.id, topicKey: link.topicKey, source: .oneClickUnsubscribe,
                evidence: Evidence(personal: PersonalEvidence.observed(ipAddress: context.remoteIP,
                                                              userAgent: request.headers[.userAgent])))
            return pages.message(.ok, language: language, title: pages.word(result.events.isEmpty ? "unsubscribeTitle" : "unsubscribedTitle", language),
                                 paragraphs: [pages.word(result.events.isEmpty ? "notSubscribed" : "unsubscribedMessage", language)])
        } catch {
            return pages.failure(error, language: fallback, request: request, context: context)
        }
    }

    // MARK: Re-permission

    /// Shows the topic, what we tell people about it and when their consent
    /// ends, with a button to renew. Never changes anything (mail scanners
    /// follow GET links).
    func showRenewal(_ request: Request, _ context: AssentRequestContext) async -> Response {
        let fallback = pages.language(request: request)
        do {
            guard let token = context.parameters.get("token"), let renewal = try await ledger.renewal(token: token) else { return linkInvalid(fallback) }
            let language = pages.language(renewal.contact.locale, request: request)
            return try await renewalPage(renewal, token: token, language: language)
        } catch {
            return pages.failure(error, language: fallback, request: request, context: context)
        }
    }

    private func renewalPage(_ renewal: Ledger.Renewal, token: String, language: String) async throws -> Response {
        let topic = renewal.topic
        guard topic.isActive else {
            return pages.message(.gone, language: language, title: pages.word("renewTitle", language), paragraphs: [pages.word("renewRetired", language)])
        }
        let now = Date()
        let state = renewal.preference?.effectiveState(at: now) ?? .none
        let current: String = if state == .granted, let expires = renewal.preference?.expiresAt {
            pages.word("renewCurrent", language).replacingOccurrences(of: "{date}", with: PortalPages.day(expires, language))
        } else if state == .granted {
            pages.word("renewNoEnd", language)
        } else {
            pages.word("renewLapsed", language)
        }
        let centre = try await ledger.linkToken(ContactLink(purpose: .preferenceCentre, contactID: renewal.contact.id))
        let model: [String: Any] = [
            "title": pages.word("renewTitle", language), "email": renewal.contact.email.value, "action": "/r/\(token)",
            "topic": topic.title, "notice": renewal.notice?.text ?? "", "noticeVersion": topic.currentNoticeVersion,
            "current": current, "centre": "/p/\(centre)",
        ]
        return pages.render("renew", language: language, model: model)
    }

    /// The page's button: a fresh grant with the notice version shown and a new lifetime.
    func renew(_ request: Request, _ context: AssentRequestContext) async -> Response {
        var request = request
        let fallback = pages.language(request: request)
        do {
            guard let token = context.parameters.get("token"), let renewal = try await ledger.renewal(token: token) else {
                return await refuseLink(context, language: fallback)
            }
            let language = pages.language(renewal.contact.locale, request: request)
            let form = FormBody(try await request.collectText(upTo: Self.maxBody))
            let shown = form.value("noticeVersion").flatMap(Int.init)
            do {
                guard let (_, result) = try await ledger.renew(token: token, noticeVersion: shown, ipAddress: context.remoteIP,
                                                               userAgent: request.headers[.userAgent]) else { return linkInvalid(language) }
                let preference = result.preferences.first { $0.topicKey == renewal.topic.key }
                var paragraphs = [pages.word(result.events.isEmpty ? "renewAlready" : "renewedMessage", language)
                    .replacingOccurrences(of: "{topic}", with: renewal.topic.title)]
                if let expires = preference?.expiresAt {
                    paragraphs.append(pages.word("renewUntil", language).replacingOccurrences(of: "{date}", with: PortalPages.day(expires, language)))
                }
                return pages.message(.ok, language: language, title: pages.word("renewedTitle", language), paragraphs: paragraphs)
            } catch DomainError.invalid(let errors) {
                context.logger.info("renewal refused: \(errors.map(\.description).joined(separator: "; "))")
                return pages.message(.unprocessableContent, language: language, title: pages.word("renewTitle", language),
                                     paragraphs: [pages.word(renewal.topic.isActive ? "pageOutdated" : "renewRetired", language)])
            }
        } catch {
            return pages.failure(error, language: fallback, request: request, context: context)
        }
    }

    // MARK: Shared

    private func resolve(_ context: AssentRequestContext, _ purpose: ContactLink.Purpose) async throws -> (ContactLink, Contact)? {
        guard let token = context.parameters.get("token") else { return nil }
        return try await ledger.resolveLink(token, purpose: purpose).map { ($0.link, $0.contact) }
    }

    /// A post with a link that does not check out. Only these are counted
    /// per client address (guessing tokens): valid one-click unsubscribes
    /// arrive in bursts from a few mail providers' servers and must never be refused.
    private func refuseLink(_ context: AssentRequestContext, language: String) async -> Response {
        let admitted = await limiter.admit(context.remoteIP ?? "unknown")
        guard admitted.allowed else { return pages.tooMany(retryAfter: admitted.retryAfter, language: language) }
        return linkInvalid(language)
    }

    private func linkInvalid(_ language: String) -> Response {
        pages.message(.notFound, language: language, title: pages.word("linkInvalidTitle", language), paragraphs: [pages.word("linkInvalidMessage", language)])
    }
}

extension Pages {
    /// Every active topic grouped by category, with the person's state and the
    /// notice version printed (sent back as `shown` so the event records it).
    func preferenceCategories(ledger: Ledger, contactID: UUID, language: String) async throws -> [[String: Any]] {
        let preferences = try await ledger.store.ledgerState(contactID: contactID).preferences
        let now = Date()
        var categories: [(name: String, topics: [[String: Any]])] = []
        for topic in try await ledger.store.topics(includeRetired: false) {
            let state = preferences[topic.key]?.effectiveState(at: now) ?? .none
            let notice = try await ledger.store.notice(topicKey: topic.key, version: topic.currentNoticeVersion)
            let (stateClass, stateKey) = switch state {
            case .granted: ("granted", "stateGranted")
            case .pending: ("pending", "statePending")
            case .none, .withdrawn, .expired: ("no", "stateNo")
            }
            let entry: [String: Any] = [
                "key": topic.key, "title": topic.title, "description": topic.description.isEmpty ? false : topic.description, "notice": notice?.text ?? "",
                "noticeVersion": topic.currentNoticeVersion, "checked": state == .granted || state == .pending,
                "stateClass": stateClass, "stateText": word(stateKey, language),
            ]
            if categories.last?.name == topic.category {
                categories[categories.count - 1].topics.append(entry)
            } else {
                categories.append((topic.category, [entry]))
            }
        }
        return categories.map { ["name": $0.name, "topics": $0.topics] }
    }
}
