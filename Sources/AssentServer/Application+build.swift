import AssentCore
import AssentStore
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// Where and how the server listens.
public struct ServerConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// How long a connection may sit without a complete request head (Hummingbird's idle timeout:
    /// it also closes an idle keep-alive connection, and one whose body pauses this long).
    public var headerTimeout: Duration
    /// How long a request's body may take, in all, to arrive after its head.
    public var bodyTimeout: Duration

    public init(host: String = "127.0.0.1", port: Int = 8080, headerTimeout: Duration = .seconds(30), bodyTimeout: Duration = .seconds(120)) {
        self.host = host
        self.port = port
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
    }
}

/// Loads the OpenAPI document shipped with the server.
public func openAPIDocument() throws -> Data {
    guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json") else {
        throw APIError(.internalServerError, detail: "openapi.json is missing from the bundle")
    }
    return try Data(contentsOf: url)
}

/// Builds the router: every route of the table, behind problem rendering,
/// API-key authentication with scopes, and idempotent replay of writes.
public func buildRouter(ledger: Ledger, issuer: ReceiptIssuer? = nil, site: SiteConfiguration = SiteConfiguration()) async throws -> Router<AssentRequestContext> {
    let router = Router(context: AssentRequestContext.self)
    let metrics = ServerMetrics(store: ledger.store)
    ledger.observers.add { events in metrics.recordConsent(events) }
    router.add(middleware: MetricsMiddleware(metrics: metrics))
    router.add(middleware: RequestIDMiddleware())
    router.add(middleware: ProblemMiddleware())
    router.add(middleware: ClientAddressMiddleware(site: site))
    let pages = try await Pages(site: site)
    router.add(middleware: PublicPageLimitMiddleware(limiter: RateLimiter(limit: site.publicRequestsPerMinute), pages: pages))
    let forms = FormPages(ledger: ledger, pages: pages, limiter: RateLimiter(limit: site.formPostsPerMinute))
    var api = API(ledger: ledger, openAPIDocument: try openAPIDocument())
    if let issuer { api.issuer = issuer }
    api.site = site
    api.embed = { form in try await forms.embedSnippet(form) }
    api.exportPage = { export in pages.exportHTML(export) }
    let gate = Gate(store: ledger.store, keys: ledger.apiKeyCache, failures: RateLimiter(limit: site.failedAuthenticationsPerMinute))
    for route in api.routes {
        let hbPath = RouterPath(stringLiteral: route.path)
        router.on(hbPath, method: route.method) { request, context in
            try await gate.handle(route, request, context).response
        }
    }
    // Pages people open from emails (not part of the JSON API).
    let confirmation = ConfirmationPages(ledger: ledger, pages: pages)
    router.get("/confirm/{token}") { request, context in try await confirmation.show(request, context) }
    router.post("/confirm/{token}") { request, context in try await confirmation.confirm(request, context) }
    router.get("/f/{id}") { request, context in await forms.show(request, context) }
    router.post("/f/{id}") { request, context in await forms.submit(request, context) }
    router.on("/f/{id}", method: .options) { request, context in await forms.preflight(request, context) }
    let preferences = PreferencePages(ledger: ledger, pages: pages, limiter: RateLimiter(limit: site.linkPostsPerMinute))
    router.get("/p/{token}") { request, context in await preferences.showCentre(request, context) }
    router.post("/p/{token}") { request, context in await preferences.saveCentre(request, context) }
    router.get("/u/{token}") { request, context in await preferences.showUnsubscribe(request, context) }
    router.post("/u/{token}") { request, context in await preferences.unsubscribe(request, context) }
    router.get("/r/{token}") { request, context in await preferences.showRenewal(request, context) }
    router.post("/r/{token}") { request, context in await preferences.renew(request, context) }
    let portal = PortalPages(ledger: ledger, pages: pages, limiter: RateLimiter(limit: site.formPostsPerMinute))
    router.get("/portal") { request, context in await portal.start(request, context) }
    router.post("/portal") { request, context in await portal.requestLink(request, context) }
    router.get("/portal/signin/{token}") { request, context in await portal.showSignIn(request, context) }
    router.post("/portal/signin/{token}") { request, context in await portal.signIn(request, context) }
    router.get("/portal/home") { request, context in await portal.home(request, context) }
    router.post("/portal/preferences") { request, context in await portal.savePreferences(request, context) }
    router.post("/portal/erasure") { request, context in await portal.requestErasure(request, context) }
    router.post("/portal/signout") { request, context in await portal.signOut(request, context) }
    router.get("/portal/export") { request, context in await portal.export(request, context) }
    let console = ConsolePages(ledger: ledger, pages: pages, signInLimiter: RateLimiter(limit: site.formPostsPerMinute))
    for route in console.routes {
        router.on(RouterPath(stringLiteral: route.path), method: route.method) { request, context in await console.handle(route, request, context) }
    }
    // Prometheus scrapes this; like /healthz it needs no key (expose it to the monitoring network only).
    router.get("/metrics") { _, _ in
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: try await metrics.render())))
    }
    let stylesheet = try Data(contentsOf: Bundle.module.url(forResource: "assent", withExtension: "css")!)
    router.get("/assets/assent.css") { _, _ in
        var headers = HTTPFields()
        headers[.contentType] = "text/css; charset=utf-8"
        headers[.xContentTypeOptions] = "nosniff"
        headers[.cacheControl] = "public, max-age=3600"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: stylesheet)))
    }
    return router
}

/// The whole application, every dependency a parameter (STYLE.md #1).
public func buildApplication(
    configuration: ServerConfiguration, ledger: Ledger, issuer: ReceiptIssuer? = nil, site: SiteConfiguration = SiteConfiguration(),
    services: [any Service] = [], logger: Logger, onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) async throws -> some ApplicationProtocol {
    let router = try await buildRouter(ledger: ledger, issuer: issuer, site: site)
    return Application(
        router: router,
        server: .http1(configuration: .init(additionalChannelHandlers: [SlowBodyHandler(timeout: TimeAmount(configuration.bodyTimeout))],
                                            idleTimeout: TimeAmount(configuration.headerTimeout))),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "Assent"),
        services: services,
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? configuration.port) },
        logger: logger
    )
}

/// Authentication, authorisation and idempotency around each handler.
struct Gate: Sendable {
    let store: any LedgerStore
    /// Keys read at most a second ago: a key revoked through this server stops at once, one revoked elsewhere within a second.
    let keys: ShortLivedCache<String, APIKey>
    /// Failed authentications per client address: guessing keys is cut off (429) before a key is even read.
    let failures: RateLimiter

    func handle(_ route: APIRoute, _ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var context = context
        if let required = route.scope {
            let key = try await authenticate(request, from: context.remoteIP ?? "unknown")
            guard key.scope >= required else {
                throw APIError(.forbidden, detail: "this API key has scope '\(key.scope.rawValue)'; this request needs '\(required.rawValue)'")
            }
            context.apiKey = key
        }
        guard route.method != .get, route.replayable, let idempotencyKey = request.headers[.idempotencyKey] else {
            return try await route.handler(request, context)
        }
        return try await idempotent(route, request, context, idempotencyKey: idempotencyKey)
    }

    /// A valid key always gets through; past the limit of failures an address gets 429 instead
    /// of 401, so guessing is slowed without locking out clients that share an address with a guesser.
    private func authenticate(_ request: Request, from address: String) async throws -> APIKey {
        // Made only when refusing (its headers and text cost every request when made up front).
        func unauthorized(_ detail: String) -> APIError {
            var error = APIError(.unauthorized, detail: detail)
            error.headers[.wwwAuthenticate] = "Bearer realm=\"assent\""
            return error
        }
        do {
            // The field read as is (the headers' subscript joins repeated fields through generic code).
            var header: String?
            for field in request.headers where field.name == .authorization {
                guard header == nil else { throw unauthorized("send one Authorization header, not several") }
                header = field.value
            }
            // Byte by byte: lowercased() and Foundation's trimming (through NSString) were a twentieth of a check's CPU.
            guard let header,
                  header.utf8.prefix(7).map({ $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 + 32 : $0 }).elementsEqual("bearer ".utf8)
            else { throw unauthorized("send an API key as 'Authorization: Bearer assent_...'") }
            guard let (id, digest) = Self.presentedKey(header), let key = try await keys.value(id, fetch: { try await store.apiKey(id: id) }),
                  key.matches(secretDigest: digest) else {
                throw unauthorized("the API key is not valid")
            }
            guard key.isActive else { throw unauthorized("the API key has been revoked") }
            return key
        } catch let error as APIError where error.status == .unauthorized {
            let admitted = await failures.admit(address)
            guard admitted.allowed else {
                throw APIError.tooManyRequests("too many requests with a missing or wrong API key from this address", retryAfter: admitted.retryAfter)
            }
            throw error
        }
    }

    /// The key id and secret digest of the token after a Bearer header's scheme, white space around it
    /// ignored (RFC 9110), read where the header's bytes lie. The header begins with the scheme (the caller checked).
    static func presentedKey(_ header: String) -> (id: String, secretDigest: SHA256.Digest)? {
        var header = header
        let found: (id: String, secretDigest: SHA256.Digest)?? = header.withUTF8 { bytes in
            guard bytes.count >= "bearer ".utf8.count else { return .some(nil) }
            func space(_ byte: UInt8) -> Bool { byte == 0x20 || (0x09...0x0D).contains(byte) }
            var start = "bearer ".utf8.count, end = bytes.count
            while start < end, space(bytes[start]) { start += 1 }
            while end > start, space(bytes[end - 1]) { end -= 1 }
            // Non-ASCII at either end may be Unicode white space: trimmed below as text.
            guard start == end || (bytes[start] < 0x80 && bytes[end - 1] < 0x80) else { return .none }
            return .some(APIKey.presented(UnsafeBufferPointer(rebasing: bytes[start..<end])))
        }
        if let found { return found }
        var token = String(decoding: header.utf8.dropFirst("bearer ".utf8.count), as: UTF8.self).trimmingWhitespace
        return token.withUTF8 { APIKey.presented($0) }
    }

    /// A write carrying `Idempotency-Key` runs once; a retry with the same key
    /// and body gets the stored response, with the same body it would have had.
    private func idempotent(_ route: APIRoute, _ request: Request, _ context: AssentRequestContext,
                            idempotencyKey: String) async throws -> APIResponse {
        guard (1...255).contains(idempotencyKey.count), idempotencyKey.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
            throw APIError.badRequest(field: "Idempotency-Key", "must be 1 to 255 visible ASCII characters")
        }
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: context.maxUploadSize)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, detail: "request body is larger than \(context.maxUploadSize) bytes")
        }
        var hasher = SHA256()
        hasher.update(data: Data("\(route.method.rawValue) \(request.uri.path)\n".utf8))
        // JSON is hashed in a canonical form (sorted keys), so that a client
        // that re-serialises the same request in another key order still matches.
        let raw = Data(buffer: body)
        if let object = try? JSONSerialization.jsonObject(with: raw, options: [.fragmentsAllowed]),
           let canonical = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .fragmentsAllowed]) {
            hasher.update(data: canonical)
        } else {
            hasher.update(data: raw)
        }
        let scope = context.apiKey?.id ?? "anonymous"
        switch try await store.beginIdempotency(scope: scope, key: idempotencyKey, requestHash: Data(hasher.finalize()), now: Date()) {
        case .replay(let stored):
            var response = APIResponse(status: .init(code: stored.status), body: stored.body, contentType: stored.contentType)
            response.headers[.idempotentReplayed] = "true"
            return response
        case .inProgress:
            throw APIError(.conflict, detail: "a request with this Idempotency-Key is still being processed; retry later")
        case .mismatch:
            throw APIError(.unprocessableContent, detail: "this Idempotency-Key was used for a different request",
                           errors: [ValidationError(field: "Idempotency-Key", "was used for a different request")])
        case .started:
            let response: APIResponse
            do {
                response = try await route.handler(request, context)
            } catch {
                // Nothing was done: free the key so a corrected request can use it.
                try? await store.abandonIdempotency(scope: scope, key: idempotencyKey)
                throw error
            }
            // The work is done; never free the key now (a retry would do it twice).
            // If storing the response fails, the key stays "in progress" until its
            // timeout, and retries get 409 rather than a second execution.
            try? await store.completeIdempotency(scope: scope, key: idempotencyKey, response: StoredResponse(
                status: Int(response.status.code), contentType: response.contentType, body: response.buffer.map { Data(buffer: $0) } ?? response.body))
            return response
        }
    }
}

extension HTTPField.Name {
    static let idempotencyKey = Self("Idempotency-Key")!
    static let idempotentReplayed = Self("Idempotent-Replayed")!
}

/// The HTML to paste into a web page for a form (what `GET /api/v1/forms/{id}/embed` returns).
public func formEmbedHTML(ledger: Ledger, form: Form, site: SiteConfiguration) async throws -> String {
    let pages = try await Pages(site: site)
    return try await FormPages(ledger: ledger, pages: pages, limiter: RateLimiter(limit: 1)).embedSnippet(form)
}

/// A personal-data export as a printable HTML page (what `?format=html` returns).
public func personalDataHTML(_ export: PersonalDataExport, site: SiteConfiguration) async throws -> String {
    try await Pages(site: site).exportHTML(export)
}
