import AssentCore
import AssentStore
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes
import Hummingbird
import Mustache

/// What the pages people see (forms, preference centre, unsubscribe,
/// confirmation) need to know about the site they are served from.
public struct SiteConfiguration: Sendable {
    /// The base URL people reach this server at; links and embeddable forms use it.
    public var publicURL: @Sendable () -> String
    /// The organisation's name, shown in page footers.
    public var organisation: String
    /// Form and portal posts accepted from one client address per minute, per instance.
    public var formPostsPerMinute: Int
    /// Posts to the preference centre and unsubscribe links per client address per minute, per instance.
    public var linkPostsPerMinute: Int

    /// Addresses of reverse proxies whose `X-Forwarded-For` is believed. The
    /// client address (for rate limits and as evidence) is the right-most
    /// forwarded address that is not one of them; with none, the socket peer.
    public var trustedProxies: Set<String>
    /// The time zone staff work in: the console shows times in it and reads
    /// "when they said it" in it.
    public var consoleTimeZone: TimeZone
    /// Requests of any kind to the public pages (forms, links, confirmation, portal) per client address per minute, per instance.
    public var publicRequestsPerMinute = 300
    /// API requests with a missing, wrong or revoked key per client address per minute, per instance; more are refused before any key is read.
    public var failedAuthenticationsPerMinute = 30

    public init(publicURL: @escaping @Sendable () -> String = { "http://127.0.0.1:8080" }, organisation: String = "Assent",
                formPostsPerMinute: Int = 20, linkPostsPerMinute: Int = 60, trustedProxies: Set<String> = [],
                consoleTimeZone: TimeZone = TimeZone(identifier: "UTC")!) {
        self.consoleTimeZone = consoleTimeZone
        self.publicURL = publicURL
        self.organisation = organisation
        self.formPostsPerMinute = formPostsPerMinute
        self.linkPostsPerMinute = linkPostsPerMinute
        self.trustedProxies = trustedProxies
    }

    /// The client's address behind the trusted proxies.
    public func clientAddress(peer: String?, forwardedFor: [String]) -> String? {
        guard let peer, trustedProxies.contains(peer) else { return peer }
        let chain = forwardedFor.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return chain.reversed().first { !trustedProxies.contains($0) } ?? chain.first ?? peer
    }

    /// The public URL without a trailing slash.
    var baseURL: String {
        let url = publicURL()
        return url.hasSuffix("/") ? String(url.dropLast()) : url
    }

    /// `scheme://host[:port]` of the public URL, for comparing with `Origin`.
    var origin: String { Self.origin(of: baseURL) ?? baseURL }

    static func origin(of url: String) -> String? {
        guard let parts = URLComponents(string: url), let scheme = parts.scheme?.lowercased(), let host = parts.host?.lowercased() else { return nil }
        return "\(scheme)://\(host)" + (parts.port.map { ":\($0)" } ?? "")
    }
}

/// Replaces the request's peer address by the client's when the peer is a trusted proxy.
struct ClientAddressMiddleware: RouterMiddleware {
    let site: SiteConfiguration

    func handle(_ request: Request, context: AssentRequestContext, next: (Request, AssentRequestContext) async throws -> Response) async throws -> Response {
        guard !site.trustedProxies.isEmpty else { return try await next(request, context) }
        var context = context
        context.remoteIP = site.clientAddress(peer: context.remoteIP, forwardedFor: request.headers[values: .xForwardedFor])
        return try await next(request, context)
    }
}

extension HTTPField.Name {
    static let xForwardedFor = Self("X-Forwarded-For")!
}

/// Renders the person-facing pages from Mustache templates, in the visitor's
/// language. A page is a model (a dictionary built by its handler) and a view
/// (the template); templates only render.
struct Pages: Sendable {
    let library: MustacheLibrary
    /// Language code -> word key -> text, from `Resources/words/<lang>.json`.
    let words: [String: [String: String]]
    let site: SiteConfiguration

    init(site: SiteConfiguration) async throws {
        guard let pages = Bundle.module.resourceURL?.appendingPathComponent("pages").path,
              let wordsDirectory = Bundle.module.resourceURL?.appendingPathComponent("words") else {
            throw APIError(.internalServerError, detail: "page templates are missing")
        }
        self.library = try await MustacheLibrary(directory: pages)
        var words: [String: [String: String]] = [:]
        for file in try FileManager.default.contentsOfDirectory(at: wordsDirectory, includingPropertiesForKeys: nil) where file.pathExtension == "json" {
            words[file.deletingPathExtension().lastPathComponent] = try JSONDecoder().decode([String: String].self, from: Data(contentsOf: file))
        }
        guard words["en"] != nil else { throw APIError(.internalServerError, detail: "the English page words are missing") }
        self.words = words
        self.site = site
    }

    /// The first of `preferred` (a form's or contact's language) that pages
    /// exist in, else the best match of the browser's `Accept-Language`, else English.
    func language(_ preferred: String?..., request: Request) -> String {
        for candidate in preferred.compactMap({ $0 }) {
            let primary = Self.primary(candidate)
            if words[primary] != nil { return primary }
        }
        let ranked = (request.headers[.acceptLanguage] ?? "").split(separator: ",").compactMap { part -> (String, Double)? in
            let pieces = part.split(separator: ";")
            guard let tag = pieces.first?.trimmingCharacters(in: .whitespaces), !tag.isEmpty else { return nil }
            let q = pieces.dropFirst().compactMap { piece -> Double? in
                let kv = piece.trimmingCharacters(in: .whitespaces).split(separator: "=")
                return kv.count == 2 && kv[0] == "q" ? Double(kv[1]) : nil
            }.first ?? 1
            return (Self.primary(tag), q)
        }
        // Stable: equal weights keep the browser's order.
        for (tag, q) in ranked.enumerated().sorted(by: { ($0.element.1, -$0.offset) > ($1.element.1, -$1.offset) }).map(\.element)
            where q > 0 && words[tag] != nil {
            return tag
        }
        return "en"
    }

    static func primary(_ tag: String) -> String { String(tag.lowercased().prefix { $0 != "-" && $0 != "_" }) }

    func words(_ language: String) -> [String: String] { words[language] ?? words["en"]! }

    func word(_ key: String, _ language: String) -> String { words(language)[key] ?? words["en"]?[key] ?? key }

    /// Renders a template with the shared parts of every page model.
    func render(_ template: String, language: String, status: HTTPResponse.Status = .ok, model: [String: Any],
                headers: HTTPFields = PageHeaders.html()) -> Response {
        Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html(template, language: language, model: model))))
    }

    func html(_ template: String, language: String, model: [String: Any]) -> String {
        var model = model
        model["lang"] = language
        model["t"] = words(language)
        model["organisation"] = site.organisation
        return library.render(model, withTemplate: template) ?? "<!DOCTYPE html><title>Assent</title><p>page template \(template) is missing</p>"
    }

    /// A page with a title, paragraphs and an optional link, for outcomes and errors.
    func message(_ status: HTTPResponse.Status, language: String, title: String, paragraphs: [String], link: (href: String, text: String)? = nil,
                 headers: HTTPFields = PageHeaders.html()) -> Response {
        var model: [String: Any] = ["title": title, "paragraphs": paragraphs]
        if let link { model["link"] = ["href": link.href, "text": link.text] }
        return render("message", language: language, status: status, model: model, headers: headers)
    }

    /// A personal-data export as a printable page: the same facts as the JSON.
    func exportHTML(_ e: PersonalDataExport) -> String {
        func t(_ d: Date?) -> String {
            guard let d else { return "" }
            return d.formatted(Date.FormatStyle(date: .abbreviated, time: .shortened, locale: Locale(identifier: "en_GB"),
                                                timeZone: TimeZone(identifier: "UTC")!)) + " UTC"
        }
        let model: [String: Any] = [
            "generated": t(e.generatedAt), "erased": e.erasedAt.map { t($0) as Any } ?? false,
            "contact": ["email": e.contact.email, "name": e.contact.name ?? "", "externalId": e.contact.externalId ?? "",
                        "locale": e.contact.locale ?? "", "created": t(e.contact.createdAt), "id": e.contact.id],
            "preferences": e.preferences.map { ["title": $0.title, "state": $0.state, "since": t($0.since), "expires": t($0.expiresAt)] },
            "events": e.events.map { ev -> [String: Any] in
                let evidence = ev.evidenceShredded ? "erased" : [ev.evidence?.note.map { "“\($0)”" }, ev.evidence?.ip.map { "IP \($0)" },
                                                                  ev.evidence?.userAgent].compactMap { $0 }.joined(separator: "; ")
                return ["seq": ev.seq, "when": t(ev.occurredAt), "topic": ev.topic, "from": ev.from, "to": ev.to, "action": ev.action,
                        "source": ev.source, "channel": ev.channel.map { $0 as Any } ?? false, "form": ev.formId.map { "\($0) v\(ev.formVersion ?? 0)" as Any } ?? false,
                        "notice": ev.noticeVersion.map { "v\($0)" } ?? "", "evidence": evidence]
            },
            "notices": e.notices.map { ["topic": $0.topic, "version": $0.version, "published": t($0.publishedAt), "text": $0.text] },
            "forms": e.forms.map { ["id": $0.id, "version": $0.version, "title": $0.title] },
            "emails": e.emails.map { ["kind": $0.kind, "status": $0.status, "queued": t($0.queuedAt), "sent": $0.sentAt.map { t($0) as Any } ?? false] },
            "disclosures": e.disclosures.map { ["recipient": $0.recipient, "event": $0.event, "status": $0.status, "queued": t($0.queuedAt),
                                                "delivered": $0.deliveredAt.map { t($0) as Any } ?? false] },
            "hasDisclosures": !e.disclosures.isEmpty,
            "requests": e.requests.map { ["kind": $0.kind, "channel": $0.channel, "created": t($0.createdAt), "due": t($0.dueAt), "status": $0.status] },
            "receiptCount": e.receipts.count, "jwks": site.baseURL + "/.well-known/jwks.json",
        ]
        return html("export", language: "en", model: model)
    }

    /// 429 with `Retry-After`, for a client address over its limit.
    func tooMany(retryAfter: Int, language: String) -> Response {
        var headers = PageHeaders.html()
        headers[.retryAfter] = String(retryAfter)
        return message(.tooManyRequests, language: language, title: word("tooManyTitle", language), paragraphs: [word("tooManyMessage", language)],
                       headers: headers)
    }

    /// The page for an error a handler did not expect: nothing internal is shown.
    func failure(_ error: any Error, language: String, request: Request, context: AssentRequestContext) -> Response {
        let status = APIError.from(error)?.status ?? .internalServerError
        switch status {
        case .gone:
            return message(status, language: language, title: word("formGoneTitle", language), paragraphs: [word("formGoneMessage", language)])
        case .serviceUnavailable, .conflict:
            return message(status, language: language, title: word("failedTitle", language), paragraphs: [word("failedMessage", language)])
        case .contentTooLarge:
            return message(status, language: language, title: word("tooLargeTitle", language), paragraphs: [word("tooLargeMessage", language)])
        case .notFound:
            return message(status, language: language, title: word("notFoundTitle", language), paragraphs: [word("notFoundMessage", language)])
        default:
            context.logger.error("page failed: \(String(reflecting: error))")
            return message(.internalServerError, language: language, title: word("failedTitle", language), paragraphs: [word("failedMessage", language)])
        }
    }
}

/// Headers for every HTML page: no script at all, never cached, not framed
/// unless the page says by whom, and no Referer to other sites (page URLs
/// carry secrets). `same-origin` rather than `no-referrer`, because with
/// `no-referrer` browsers send `Origin: null` on the page's own form posts.
enum PageHeaders {
    static func html(frameAncestors: [String] = [], formActions: [String] = []) -> HTTPFields {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        let ancestors = frameAncestors.isEmpty ? "'none'" : (["'self'"] + frameAncestors).joined(separator: " ")
        let actions = (["'self'"] + formActions).joined(separator: " ")
        headers[.contentSecurityPolicy] = "default-src 'none'; style-src 'self'; img-src 'self'; form-action \(actions); frame-ancestors \(ancestors); base-uri 'none'"
        headers[.xContentTypeOptions] = "nosniff"
        headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
        headers[.cacheControl] = "no-store"
        return headers
    }

    static var html: HTTPFields { html() }
}

/// `application/x-www-form-urlencoded` values, repeated names kept.
struct FormBody {
    let pairs: [(String, String)]

    /// Fields already decoded (a multipart upload's small fields).
    init(pairs: [(String, String)]) {
        self.pairs = pairs
    }

    init(_ text: String) {
        pairs = text.split(separator: "&").map { part in
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            // The NUL character is dropped: no field needs it and neither store keeps it in text.
            func decode(_ s: Substring) -> String {
                (String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "").replacingOccurrences(of: "\u{0}", with: "")
            }
            return (decode(kv[0]), kv.count > 1 ? decode(kv[1]) : "")
        }
    }

    func values(_ name: String) -> [String] { pairs.filter { $0.0 == name }.map(\.1) }

    func value(_ name: String) -> String? { values(name).first }
}

/// Counts requests per client address in fixed one-minute windows. Limits are
/// per instance: N instances behind a balancer allow up to N times as many.
public actor RateLimiter {
    let limit: Int
    let window: TimeInterval
    private var windows: [String: (start: Date, count: Int)] = [:]

    public init(limit: Int, window: TimeInterval = 60) {
        self.limit = limit
        self.window = window
    }

    /// Whether one more request from `address` is allowed now; if not, seconds until it is.
    public func admit(_ address: String, now: Date = Date()) -> (allowed: Bool, retryAfter: Int) {
        let key = Self.key(address)
        if windows.count > 50_000 { windows = windows.filter { now.timeIntervalSince($0.value.start) < window } }
        var entry = windows[key] ?? (now, 0)
        if now.timeIntervalSince(entry.start) >= window { entry = (now, 0) }
        entry.count += 1
        windows[key] = entry
        guard entry.count <= limit else {
            return (false, max(1, Int((window - now.timeIntervalSince(entry.start)).rounded(.up))))
        }
        return (true, 0)
    }
}

extension RateLimiter {
    /// IPv6 clients usually hold a whole /64, so they are counted by it.
    static func key(_ address: String) -> String {
        guard address.contains(":") else { return address }
        var raw = in6_addr()
        guard inet_pton(AF_INET6, address, &raw) == 1 else { return address }
        let bytes = withUnsafeBytes(of: raw) { Array($0.prefix(8)) }
        return bytes.map { String(format: "%02x", $0) }.joined() + "::/64"
    }
}

extension Request {
    /// The `Origin` header, treating `null` (sent by privacy-minded pages and
    /// sandboxed frames) as absent: such posts are judged by their tokens alone.
    var origin: String? {
        guard let value = headers[.origin], value != "null" else { return nil }
        return value
    }

    /// The body as text, refusing more than `limit` bytes with 413.
    mutating func collectText(upTo limit: Int) async throws -> String {
        String(buffer: try await collectBody(upTo: limit))
    }

    var isJSON: Bool {
        let type = headers[.contentType]?.lowercased() ?? ""
        return type.hasPrefix("application/json") || type.contains("+json")
    }
}
