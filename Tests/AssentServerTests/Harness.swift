import AssentCore
import AssentServer
import AssentSQLite
import AssentStore
import AssentTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

/// A JSON API under test, with an admin key and helpers that speak JSON.
struct APIHarness {
    let client: any TestClientProtocol
    let ledger: Ledger
    let adminToken: String

    struct Reply {
        let status: HTTPResponse.Status
        let headers: HTTPFields
        let body: Data

        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
        var items: [[String: Any]] { json["items"] as? [[String: Any]] ?? [] }
        var problemFields: [String] { (json["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String } }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    @discardableResult
    func send(_ method: HTTPRequest.Method, _ path: String, json: Any? = nil, raw: String? = nil, token: String? = nil,
              headers extra: HTTPFields = [:]) async throws -> Reply {
        var headers = extra
        headers[.authorization] = "Bearer \(token ?? adminToken)"
        var body: ByteBuffer?
        if let json {
            body = ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json))
            if headers[.contentType] == nil { headers[.contentType] = "application/json" }
        } else if let raw {
            body = ByteBuffer(string: raw)
            if headers[.contentType] == nil { headers[.contentType] = "application/json" }
        }
        let response = try await client.executeRequest(uri: path, method: method, headers: headers, body: body)
        return Reply(status: response.status, headers: response.headers, body: Data(response.body.readableBytesView))
    }

    /// A browser-like request to a page: form-encoded body, no API key.
    func page(_ method: HTTPRequest.Method, _ path: String, form: String? = nil, headers extra: HTTPFields = [:]) async throws -> Reply {
        var headers = extra
        if form != nil && headers[.contentType] == nil { headers[.contentType] = "application/x-www-form-urlencoded" }
        let response = try await client.executeRequest(uri: path, method: method, headers: headers, body: form.map { ByteBuffer(string: $0) })
        return Reply(status: response.status, headers: response.headers, body: Data(response.body.readableBytesView))
    }

    func newKey(_ scope: APIScope) async throws -> String {
        let (key, token) = APIKey.generate(name: "\(scope) test key", scope: scope, now: Date())
        try await ledger.store.insertAPIKey(key)
        return token
    }

    func createTopic(_ key: String, category: String = "news", doubleOptIn: Bool = true) async throws {
        let r = try await send(.post, "/api/v1/topics", json: ["key": key, "title": key.capitalized, "category": category, "notice": "We will email you about \(key).",
                                                               "requiresDoubleOptIn": doubleOptIn])
        #expect(r.status == .created, "\(r.text)")
    }

    func createContact(_ email: String, externalId: String? = nil) async throws -> String {
        var body: [String: Any] = ["email": email]
        if let externalId { body["externalId"] = externalId }
        let r = try await send(.post, "/api/v1/contacts", json: body)
        #expect(r.status == .created, "\(r.text)")
        return r.json["id"] as? String ?? ""
    }
}

typealias Backend = StoreKind

func withAPI(_ backend: StoreKind = .memory, site: SiteConfiguration = SiteConfiguration(), now: (@Sendable () -> Date)? = nil,
             _ body: @Sendable (APIHarness) async throws -> Void) async throws {
    let store = try await backend.makeStore()
    var configured = Ledger(store: store, masterKey: .generate(), environment: now.map { LedgerEnvironment(now: $0) } ?? .live)
    configured.passwordHasher = .bcrypt(cost: 4)
    let ledger = configured
    let (key, token) = APIKey.generate(name: "admin", scope: .admin, now: Date())
    try await store.insertAPIKey(key)
    let app = Application(router: try await buildRouter(ledger: ledger, site: site))
    try await app.test(.router) { client in
        try await body(APIHarness(client: client, ledger: ledger, adminToken: token))
    }
}
