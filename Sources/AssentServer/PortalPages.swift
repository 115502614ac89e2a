import AssentCore
import AssentStore
import Foundation
import HTTPTypes
import Hummingbird

/// The self-service portal (`/portal`): a person asks for a single-use
/// sign-in link by email, then manages their preferences (source `portal`),
/// reads their history in plain words, downloads their data and asks for
/// erasure. Sessions live in the database (any instance can serve them); the
/// cookie is HttpOnly, SameSite=Strict and Secure on https; every
/// state-changing form carries a CSRF token derived from the session.
struct PortalPages: Sendable {
    let ledger: Ledger
    let pages: Pages
    let limiter: RateLimiter

    static let cookieName = "assent_portal"
    static let maxBody = 16 * 1024

    // MARK: Signing in

    func start(_ request: Request, _ context: AssentRequestContext) async -> Response {
        let language = pages.language(request: request)
        do {
            if try await session(request) != nil { return redirect("/portal/home") }
            let notice = request.uri.queryParameters.get("ended") != nil ? pages.word("sessionEnded", language) : nil
            return startPage(language: language, email: "", error: nil, notice: notice)
        } catch {
            return pages.failure(error, language: language, request: request, context: context)
        }
    }

    func requestLink(_ request: Request, _ context: AssentRequestContext) async -> Response {
        var request = request
        let language = pages.language(request: request)
        do {
            if let refused = await throttle(context, language: language) { return refused }
            guard isOwnOrigin(request) else { return crossSite(language) }
            let form = FormBody(try await request.collectText(upTo: Self.maxBody))
            let email = form.value("email") ?? ""
            // The same answer for a bot, an unknown address and a known one.
            let sent = pages.message(.ok, language: language, title: pages.word("linkSentTitle", language),
                                     paragraphs: [pages.word("linkSentMessage", language)])
            if !(form.value("website") ?? "").isEmpty { return sent }
            guard (try? EmailAddress(email.trimmingCharacters(in: .whitespaces))) != nil else {
                return startPage(language: language, email: email, error: pages.word(email.isEmpty ? "emailRequired" : "emailInvalid", language),
                                 notice: nil, status: .unprocessableContent)
            }
            // Looked up and written after answering, so the time taken does not
            // tell a known address from an unknown one. Nothing is acknowledged:
            // the answer is the same whether or not an email goes out.
            let ledger = self.ledger, logger = context.logger
            Task {
                do { try await ledger.requestPortalLink(email: email) } catch { logger.error("portal sign-in link not sent: \(error)") }
            }
            return sent
        } catch {
            return pages.failure(error, language: language, request: request, context: context)
        }
    }

    private func startPage(language: String, email: String, error: String?, notice: String?, status: HTTPResponse.Status = .ok) -> Response {
        var model: [String: Any] = ["title": pages.word("portalTitle", language), "email": email, "hasErrors": error != nil]
        if let error { model["error"] = error }
        if let notice { model["notice"] = notice }
        return pages.render("portal-start", language: language, status: status, model: model)
    }

    /// Shows a Sign in button; only the POST uses the link (mail scanners follow GET links).
    func showSignIn(_ request: Request, _ context: AssentRequestContext) async -> Response {
        let language = pages.language(request: request)
        do {
            let token = try context.parameters.require("token")
            switch try await ledger.portalLinkState(token: token) {
            case .valid:
                return pages.render("portal-signin", language: language, model: ["title": pages.word("signInTitle", language),
                                                                                 "action": "/portal/signin/\(token)"])
            case .used: return invalidLink(language, reason: "signInUsed", status: .gone)
            case .expired: return invalidLink(language, reason: "signInExpired", status: .gone)
            case .unknown: return invalidLink(language, reason: "linkInvalidMessage", status: .notFound)
            }
        } catch {
            return pages.failure(error, language: language, request: request, context: context)
        }
    }

    func signIn(_ request: Request, _ context: AssentRequestContext) async -> Response {
        let language = pages.language(request: request)
        do {
            if let refused = await throttle(context, language: language) { return refused }
            // Another site must not sign a browser in with the attacker's own link (login CSRF).
            guard isOwnOrigin(request) else { return crossSite(language) }
            let token = try context.parameters.require("token")
            guard let (secret, _) = try await ledger.signIn(token: token) else {
                return switch try await ledger.portalLinkState(token: token) {
                case .expired: invalidLink(language, reason: "signInExpired", status: .gone)
                case .unknown: invalidLink(language, reason: "linkInvalidMessage", status: .notFound)
                case .used, .valid: invalidLink(language, reason: "signInUsed", status: .gone)
                }
            }
            var response = redirect("/portal/home")
            response.headers[.setCookie] = cookie(secret, maxAge: Int(Ledger.portalSessionLifetime))
            return response
        } catch {
            return pages.failure(error, language: language, request: request, context: context)
        }
    }

    private func invalidLink(_ language: String, reason: String, status: HTTPResponse.Status) -> Response {
        pages.message(status, language: language, title: pages.word("signInInvalidTitle", language), paragraphs: [pages.word(reason, language)],
                      link: ("/portal", pages.word("askNewLink", language)))
    }

    // MARK: Signed in

    func home(_ request: Request, _ context: AssentRequestContext) async -> Response {
        let fallback = pages.language(request: request)
        do {
            guard let (secret, session, contact) = try await session(request) else { return redirect("/portal?ended=1") }
            return try await homePage(contact, session: session, secret: secret, language: pages.language(contact.locale, request: request))
        } catch {
            return pages.failure(error, language: fallback, request: request, context: context)
        }
    }

    func savePreferences(_ request: Request, _ context: AssentRequestContext) async -> Response {
        await signedInPost(request, context) { form, secret, session, contact, language in
            let evidence = Evidence(personal: PersonalEvidence.observed(
                ipAddress: context.remoteIP, userAgent: request.headers[.userAgent],
                note: "Signed in to the self-service portal at \(Self.iso(session.createdAt)) with a single-use link emailed to \(contact.email.value)."))
            do {
                let result: ChangeResult
                var status: [String]
                if form.value("action") == "unsubscribe-all" {
                    result = try await ledger.withdraw(contactID: contact.id, topicKey: nil, source: .portal, evidence: evidence)
                    status = [pages.word(result.events.isEmpty ? "nothingChanged" : "unsubscribedAll", language)]
                } else {
                    result = try await ledger.applyChoices(contactID: contact.id, shown: try PreferencePages.shownTopics(form.values("shown")),
                                                           chosen: Set(form.values("topic")), source: .portal, evidence: evidence)
                    status = [pages.word(result.events.isEmpty ? "nothingChanged" : "saved", language)]
                    if !result.confirmationRequestedFor.isEmpty { status.append(pages.word("savedPending", language)) }
                }
                return try await homePage(contact, session: session, secret: secret, language: language, status: status)
            } catch DomainError.invalid(let errors) {
                context.logger.info("choices refused (page out of date?): \(errors.map(\.description).joined(separator: "; "))")
                return try await homePage(contact, session: session, secret: secret, language: language, errors: [pages.word("pageOutdated", language)],
                                          httpStatus: .unprocessableContent)
            }
        }
    }

    func requestErasure(_ request: Request, _ context: AssentRequestContext) async -> Response {
        await signedInPost(request, context) { form, secret, session, contact, language in
            do {
                let recorded = try await ledger.recordSubjectRequest(contactID: contact.id, kind: .erasure, channel: "portal", note: form.value("note"))
                let text = pages.word("erasureRecorded", language).replacingOccurrences(of: "{due}", with: Self.day(recorded.dueAt, language))
                return try await homePage(contact, session: session, secret: secret, language: language, status: [text])
            } catch DomainError.invalid(let errors) {
                return try await homePage(contact, session: session, secret: secret, language: language, errors: errors.map(\.description),
                                          httpStatus: .unprocessableContent)
            }
        }
    }

    func signOut(_ request: Request, _ context: AssentRequestContext) async -> Response {
        await signedInPost(request, context) { _, secret, _, _, _ in
            try await ledger.signOut(secret: secret)
            var response = redirect("/portal?ended=1")
            response.headers[.setCookie] = cookie("", maxAge: 0)
            return response
        }
    }

    /// The person's data as a JSON file. A GET: it changes nothing.
    func export(_ request: Request, _ context: AssentRequestContext) async -> Response {
        let language = pages.language(request: request)
        do {
            guard let (_, _, contact) = try await session(request) else { return redirect("/portal?ended=1") }
            let data = try JSONCoding.encoder.encode(try await ledger.exportPersonalData(contactID: contact.id))
            var headers = PageHeaders.html()
            headers[.contentType] = "application/json; charset=utf-8"
            headers[.contentDisposition] = "attachment; filename=\"my-data-\(Self.iso(Date()).prefix(10)).json\""
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
        } catch {
            return pages.failure(error, language: language, request: request, context: context)
        }
    }

    // MARK: Shared

    /// Runs a signed-in form post after checking the session, the size, the
    /// origin and the CSRF token; anything wrong changes nothing.
    private func signedInPost(_ request: Request, _ context: AssentRequestContext,
                              _ body: (FormBody, String, PortalSession, Contact, String) async throws -> Response) async -> Response {
        var request = request
        let fallback = pages.language(request: request)
        do {
            guard let (secret, session, contact) = try await session(request) else { return redirect("/portal?ended=1") }
            let language = pages.language(contact.locale, request: request)
            if let refused = await throttle(context, language: language) { return refused }
            let form = FormBody(try await request.collectText(upTo: Self.maxBody))
            guard isOwnOrigin(request), ledger.checkCSRF(form.value("csrf"), sessionSecret: secret) else {
                return pages.message(.forbidden, language: language, title: pages.word("formExpiredTitle", language),
                                     paragraphs: [pages.word("formExpiredMessage", language)])
            }
            return try await body(form, secret, session, contact, language)
        } catch {
            return pages.failure(error, language: fallback, request: request, context: context)
        }
    }

    private func homePage(_ contact: Contact, session: PortalSession, secret: String, language: String, status: [String] = [],
                          errors: [String] = [], httpStatus: HTTPResponse.Status = .ok) async throws -> Response {
        var history: [[String: Any]] = []
        var titles: [String: String] = [:]
        for topic in try await ledger.store.topics(includeRetired: true) { titles[topic.key] = topic.title }
        for entry in try await ledger.timeline(contactID: contact.id, beforeSeq: nil, limit: 200) {
            history.append(["iso": Self.iso(entry.event.occurredAt), "when": Self.moment(entry.event.occurredAt, language),
                            "sentence": sentence(entry.event, topicTitle: titles[entry.event.topicKey] ?? entry.event.topicKey, language: language)])
        }
        var model: [String: Any] = [
            "title": pages.word("homeTitle", language), "email": contact.email.value, "csrf": ledger.csrfToken(sessionSecret: secret),
            "categories": try await pages.preferenceCategories(ledger: ledger, contactID: contact.id, language: language),
            "hasStatus": !status.isEmpty, "status": status, "hasErrors": !errors.isEmpty, "errors": errors,
            "hasHistory": !history.isEmpty, "history": history,
        ]
        if let open = try await ledger.store.subjectRequests(contactID: contact.id, status: .open, limit: 50).first(where: { $0.kind == .erasure }) {
            model["erasureOpen"] = pages.word("erasureOpen", language).replacingOccurrences(of: "{date}", with: Self.day(open.createdAt, language))
                .replacingOccurrences(of: "{due}", with: Self.day(open.dueAt, language))
        }
        return pages.render("portal-home", language: language, status: httpStatus, model: model)
    }

    /// One event in plain words: "You unsubscribed from Events, in your preference centre."
    func sentence(_ event: ConsentEvent, topicTitle: String, language: String) -> String {
        var text = pages.word("ev.\(event.action.rawValue)", language).replacingOccurrences(of: "{topic}", with: topicTitle)
        if event.action != .expired {
            text += ", " + pages.word("via.\(event.source.rawValue)", language)
            if let channel = event.channel { text += " (" + pages.word("ch.\(channel.rawValue)", language) + ")" }
        }
        return text + "."
    }

    /// Posts from our own pages carry our origin (the pages' referrer policy
    /// keeps it); another site's, or `null`, is refused. No header: not a browser.
    private func isOwnOrigin(_ request: Request) -> Bool {
        guard let origin = request.headers[.origin] else { return true }
        return origin.lowercased() == pages.site.origin
    }

    private func crossSite(_ language: String) -> Response {
        pages.message(.forbidden, language: language, title: pages.word("formExpiredTitle", language), paragraphs: [pages.word("formExpiredMessage", language)])
    }

    private func session(_ request: Request) async throws -> (String, PortalSession, Contact)? {
        guard let secret = Self.cookieValue(request.headers[values: .cookie]) else { return nil }
        return try await ledger.portalSession(secret: secret).map { (secret, $0.session, $0.contact) }
    }

    static func cookieValue(_ headers: [String], name: String = cookieName) -> String? {
        for header in headers {
            for part in header.split(separator: ";") {
                let kv = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
                if kv.count == 2, kv[0] == name, !kv[1].isEmpty { return String(kv[1]) }
            }
        }
        return nil
    }

    private func cookie(_ value: String, maxAge: Int) -> String {
        var cookie = "\(Self.cookieName)=\(value); Path=/portal; Max-Age=\(maxAge); HttpOnly; SameSite=Strict"
        if pages.site.baseURL.lowercased().hasPrefix("https://") { cookie += "; Secure" }
        return cookie
    }

    private func redirect(_ location: String) -> Response {
        var headers = PageHeaders.html()
        headers[.location] = location
        return Response(status: .seeOther, headers: headers)
    }

    private func throttle(_ context: AssentRequestContext, language: String) async -> Response? {
        let admitted = await limiter.admit(context.remoteIP ?? "unknown")
        return admitted.allowed ? nil : pages.tooMany(retryAfter: admitted.retryAfter, language: language)
    }

    static func iso(_ date: Date) -> String {
        UTCTime.rfc3339(date, milliseconds: false)
    }

    static func moment(_ date: Date, _ language: String) -> String {
        date.formatted(Date.FormatStyle(date: .long, time: .shortened, locale: Locale(identifier: language), timeZone: TimeZone(identifier: "UTC")!)) + " UTC"
    }

    static func day(_ date: Date, _ language: String) -> String {
        date.formatted(Date.FormatStyle(date: .long, time: .omitted, locale: Locale(identifier: language), timeZone: TimeZone(identifier: "UTC")!))
    }
}
