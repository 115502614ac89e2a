import AssentCore
import AssentStore
import Foundation
import HTTPTypes
import Hummingbird

/// Hosted forms (`GET /f/{id}`), the posts they and embedded copies send
/// (`POST /f/{id}`, form-encoded or JSON), and CORS for scripts on the
/// form's allowed origins. Every accepted post goes through `Ledger.submitForm`.
struct FormPages: Sendable {
    let ledger: Ledger
    let pages: Pages
    let limiter: RateLimiter

    /// Form posts are small; anything larger is refused before it is read.
    static let maxBody = 16 * 1024

    // MARK: Page

    func show(_ request: Request, _ context: AssentRequestContext) async -> Response {
        let fallback = pages.language(request: request)
        do {
            let id = try context.parameters.require("id")
            guard let form = try await lookUp(id) else { return notFound(fallback) }
            let language = pages.language(form.definition.language, request: request)
            guard form.isActive else { return gone(language) }
            var person: Contact?
            var token: String?
            if form.definition.kind == .preferences, let c = request.uri.queryParameters.get("c") {
                guard let resolved = try await ledger.resolveLink(c, purpose: .preferenceCentre) else { return linkInvalid(language) }
                person = resolved.contact
                token = c
            }
            let model = try await model(form, language: language, embed: false, person: person, contactToken: token)
            return pages.render("form", language: language, model: model, headers: headers(for: form))
        } catch {
            return pages.failure(error, language: fallback, request: request, context: context)
        }
    }

    /// The HTML to paste into a web page: the same form, posting to this server.
    func embedSnippet(_ form: Form, language: String? = nil) async throws -> String {
        let language = language ?? form.definition.language.map(Pages.primary).flatMap { pages.words[$0] != nil ? $0 : nil } ?? "en"
        return pages.html("embed", language: language, model: try await model(form, language: language, embed: true, person: nil, contactToken: nil))
    }

    /// The page model shared by the hosted page, its re-display with errors and the embed snippet.
    func model(_ form: Form, language: String, embed: Bool, person: Contact?, contactToken: String?,
               values: (email: String, name: String, chosen: Set<String>)? = nil, errors: [ValidationError] = []) async throws -> [String: Any] {
        let definition = form.definition
        let state = try await person.asyncMap { try await ledger.store.ledgerState(contactID: $0.id).preferences } ?? [:]
        var topics: [[String: Any]] = []
        for shown in definition.topics {
            guard let topic = try await ledger.store.topic(key: shown.key), topic.isActive else { continue }
            let notice = try await ledger.store.notice(topicKey: topic.key, version: shown.noticeVersion ?? topic.currentNoticeVersion)
            let current = state[topic.key]?.effectiveState(at: Date()) ?? .none
            let checked = values.map { $0.chosen.contains(topic.key) } ?? (current == .granted || current == .pending)
            topics.append(["key": topic.key, "title": topic.title, "description": topic.description.isEmpty ? false : topic.description, "notice": notice?.text ?? "", "checked": checked])
        }
        let action = embed ? "\(pages.site.baseURL)/f/\(form.id)" : "/f/\(form.id)"
        let knownPerson = person != nil && definition.kind == .preferences
        var model: [String: Any] = [
            "title": definition.title, "introduction": Self.paragraphs(definition.introduction), "formID": form.id, "version": form.version,
            "action": action, "embed": embed, "askName": definition.askName, "knownPerson": knownPerson, "topics": topics,
            "submitLabel": pages.word(knownPerson ? "saveChoices" : "subscribe", language),
            "email": values?.email ?? "", "name": values?.name ?? "",
        ]
        if let contactToken { model["contactToken"] = contactToken }
        if !errors.isEmpty {
            model["hasErrors"] = true
            model["errors"] = errors.map { ["anchor": Self.anchor($0.field), "message": message(for: $0, language: language)] }
            model["emailInvalid"] = errors.contains { $0.field == "email" }
            model["topicsInvalid"] = errors.contains { $0.field == "topics" }
        }
        return model
    }

    static func paragraphs(_ text: String) -> [String] {
        text.components(separatedBy: "\n\n").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
    }

    static func anchor(_ field: String) -> String {
        switch field {
        case "email": "assent-email"
        case "name": "assent-name"
        default: "assent-topics"
        }
    }

    /// The domain's messages are for developers; people get these, in their language.
    func message(for error: ValidationError, language: String) -> String {
        switch error.field {
        case "email": pages.word(error.message == "is required" ? "emailRequired" : "emailInvalid", language)
        case "topics" where error.message == "choose at least one topic": pages.word("chooseOne", language)
        default: error.description
        }
    }

    /// Forms may be framed by their allowed origins, and may redirect to their success page.
    func headers(for form: Form) -> HTTPFields {
        PageHeaders.html(frameAncestors: form.definition.allowedOrigins,
                         formActions: form.definition.successURL.flatMap(SiteConfiguration.origin(of:)).map { [$0] } ?? [])
    }

    // MARK: Posts

    func submit(_ request: Request, _ context: AssentRequestContext) async -> Response {
        var request = request
        let json = request.isJSON
        let fallback = pages.language(request: request)
        let origin = request.origin
        do {
            let id = try context.parameters.require("id")
            guard let form = try await lookUp(id) else {
                return json ? problem(APIError(.notFound, detail: "form '\(id.prefix(64))' not found"), origin: nil) : notFound(fallback)
            }
            let language = pages.language(form.definition.language, request: request)
            // A browser always says where a cross-site post comes from; other clients send no Origin.
            let allowedOrigin = origin.flatMap { isAllowed($0, form: form) ? $0 : nil }
            if origin != nil, allowedOrigin == nil {
                return json ? problem(APIError(.forbidden, detail: "posts from this origin are not allowed; add it to the form's allowedOrigins"), origin: nil)
                    : pages.message(.forbidden, language: language, title: pages.word("originTitle", language), paragraphs: [pages.word("originMessage", language)])
            }
            let corsOrigin = allowedOrigin == pages.site.origin ? nil : allowedOrigin
            guard form.isActive else {
                return json ? problem(APIError(.gone, detail: "form '\(form.id)' is no longer available"), origin: corsOrigin) : gone(language)
            }
            let admitted = await limiter.admit(context.remoteIP ?? "unknown")
            guard admitted.allowed else {
                let error = APIError.tooManyRequests("too many posts from this address", retryAfter: admitted.retryAfter)
                return json ? problem(error, origin: corsOrigin) : pages.tooMany(retryAfter: admitted.retryAfter, language: language)
            }
            let post: Post
            do {
                post = try await read(&request, json: json)
            } catch let error as APIError {
                if json { return problem(error, origin: corsOrigin) }
                return error.status == .contentTooLarge
                    ? pages.message(.contentTooLarge, language: language, title: pages.word("tooLargeTitle", language), paragraphs: [pages.word("tooLargeMessage", language)])
                    : pages.message(.badRequest, language: language, title: pages.word("failedTitle", language), paragraphs: [error.detail])
            }
            // A bot filled the honeypot: answer as if all went well, record nothing.
            if !(post.website ?? "").isEmpty {
                context.logger.info("form post dropped by the honeypot", metadata: ["form": "\(form.id)"])
                return success(form, confirmation: try await wouldAskToConfirm(form, post.topics), json: json, language: language, corsOrigin: corsOrigin)
            }
            var person: Contact?
            if let token = post.contactToken {
                guard let resolved = try await ledger.resolveLink(token, purpose: .preferenceCentre) else {
                    return json ? problem(.invalid(field: "c", "the personal link is not valid"), origin: corsOrigin) : linkInvalid(language)
                }
                person = resolved.contact
            }
            do {
                _ = try await ledger.submitForm(FormSubmission(
                    formID: form.id, formVersion: post.version, email: post.email, name: post.name, locale: post.locale ?? language,
                    chosenTopics: post.topics, contactID: person?.id, ipAddress: context.remoteIP, userAgent: request.headers[.userAgent]))
                // The answer depends on the form, never on the person's state, so
                // it cannot tell anyone whether an address was already subscribed.
                return success(form, confirmation: try await wouldAskToConfirm(form, post.topics), json: json, language: language, corsOrigin: corsOrigin)
            } catch DomainError.invalid(let errors) {
                if json { return problem(.invalid(errors), origin: corsOrigin) }
                let shown = try await post.version.asyncFlatMap { try await ledger.store.form(id: form.id, version: $0) } ?? form
                let model = try await model(shown, language: language, embed: false, person: person,
                                            contactToken: post.contactToken, values: (post.email ?? "", post.name ?? "", Set(post.topics)), errors: errors)
                return pages.render("form", language: language, status: .unprocessableContent, model: model, headers: headers(for: form))
            }
        } catch {
            if json { return problem(APIError.from(error) ?? APIError(.internalServerError, detail: "internal error; see the server log"), origin: nil) }
            return pages.failure(error, language: fallback, request: request, context: context)
        }
    }

    /// Whether a post with these topics asks for confirmation by email, from
    /// the form and topic settings alone: the same answer for a new address,
    /// a known one and a bot caught by the honeypot.
    private func wouldAskToConfirm(_ form: Form, _ topics: [String]) async throws -> Bool {
        if form.definition.doubleOptIn && !topics.isEmpty { return true }
        for key in topics where form.definition.topics.contains(where: { $0.key == key }) {
            if try await ledger.store.topic(key: key)?.requiresDoubleOptIn == true { return true }
        }
        return false
    }

    /// CORS preflight for JSON posts from scripts on an allowed origin.
    func preflight(_ request: Request, _ context: AssentRequestContext) async -> Response {
        guard let id = context.parameters.get("id"), let form = try? await lookUp(id), form.isActive,
              let origin = request.origin, isAllowed(origin, form: form) else {
            return Response(status: .forbidden)
        }
        var headers = HTTPFields()
        headers[.accessControlAllowOrigin] = origin
        headers[.accessControlAllowMethods] = "POST"
        headers[.accessControlAllowHeaders] = "Content-Type"
        headers[.accessControlMaxAge] = "600"
        headers[.vary] = "Origin"
        return Response(status: .noContent, headers: headers)
    }

    /// What a post carried, from either encoding.
    struct Post {
        var email, name, locale, website, contactToken: String?
        var topics: [String] = []
        var version: Int?
    }

    private func read(_ request: inout Request, json: Bool) async throws -> Post {
        let text: String
        do {
            text = try await request.collectText(upTo: Self.maxBody)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, detail: "a form post may be at most \(Self.maxBody) bytes")
        }
        if json {
            let body: FormPostBody
            do {
                body = try JSONCoding.decoder.decode(Strict<FormPostBody>.self, from: Data(text.utf8)).value
            } catch let error as DecodingError {
                throw JSONCoding.apiError(error)
            }
            return Post(email: body.email, name: body.name, locale: body.locale, website: body.website, contactToken: nil,
                        topics: body.topics ?? [], version: body.formVersion)
        }
        let form = FormBody(text)
        var version: Int?
        if let v = form.value("v"), !v.isEmpty {
            guard let number = Int(v), number >= 1 else { throw APIError.badRequest(field: "v", "must be a form version number") }
            version = number
        }
        return Post(email: form.value("email"), name: form.value("name"), locale: nil, website: form.value("website"),
                    contactToken: form.value("c").flatMap { $0.isEmpty ? nil : $0 }, topics: form.values("topic"), version: version)
    }

    private func success(_ form: Form, confirmation: Bool, json: Bool, language: String, corsOrigin: String?) -> Response {
        if json {
            var response = (try? APIResponse(json: FormPostResultJSON(status: "ok", confirmationRequired: confirmation)).response) ?? Response(status: .ok)
            addCORS(&response, origin: corsOrigin)
            return response
        }
        if let url = form.definition.successURL {
            var headers = PageHeaders.html()
            headers[.location] = url
            return Response(status: .seeOther, headers: headers)
        }
        var paragraphs = [pages.word("thanksMessage", language)]
        if confirmation { paragraphs = [pages.word("checkInbox", language)] }
        return pages.message(.ok, language: language, title: pages.word("thanksTitle", language), paragraphs: paragraphs)
    }

    private func problem(_ error: APIError, origin: String?) -> Response {
        var response = error.json
        addCORS(&response, origin: origin)
        return response
    }

    private func addCORS(_ response: inout Response, origin: String?) {
        guard let origin else { return }
        response.headers[.accessControlAllowOrigin] = origin
        response.headers[.vary] = "Origin"
    }

    private func isAllowed(_ origin: String, form: Form) -> Bool {
        let origin = origin.lowercased()
        return origin == pages.site.origin || form.definition.allowedOrigins.contains(origin)
    }

    private func lookUp(_ id: String) async throws -> Form? {
        guard (try? Topic.validateKey(id)) != nil else { return nil }
        return try await ledger.store.form(id: id)
    }

    private func notFound(_ language: String) -> Response {
        pages.message(.notFound, language: language, title: pages.word("notFoundTitle", language), paragraphs: [pages.word("notFoundMessage", language)])
    }

    private func gone(_ language: String) -> Response {
        pages.message(.gone, language: language, title: pages.word("formGoneTitle", language), paragraphs: [pages.word("formGoneMessage", language)])
    }

    func linkInvalid(_ language: String) -> Response {
        pages.message(.notFound, language: language, title: pages.word("linkInvalidTitle", language), paragraphs: [pages.word("linkInvalidMessage", language)])
    }
}

/// A form post sent as JSON by a script on an allowed origin.
struct FormPostBody: StrictBody {
    static let allowedKeys: Set<String> = ["email", "name", "topics", "website", "formVersion", "locale"]
    var email: String?
    var name: String?
    var topics: [String]?
    var website: String?
    var formVersion: Int?
    var locale: String?
}

/// The answer to an accepted JSON post; the same whether the address was new or known.
struct FormPostResultJSON: Encodable {
    var status: String
    var confirmationRequired: Bool
}

extension APIError {
    /// The problem+json response, outside the middleware.
    var json: Response {
        var body: [String: Any] = ["type": problemType, "title": title, "status": Int(status.code), "detail": detail]
        if !errors.isEmpty { body["errors"] = errors.map { ["field": $0.field, "message": $0.message] } }
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        var headers = headers
        headers[.contentType] = "application/problem+json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data + Data("\n".utf8))))
    }
}

extension Optional {
    func asyncMap<U>(_ transform: (Wrapped) async throws -> U) async rethrows -> U? {
        guard let value = self else { return nil }
        return try await transform(value)
    }

    func asyncFlatMap<U>(_ transform: (Wrapped) async throws -> U?) async rethrows -> U? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
