import AssentCore
import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

/// The abuse limits as one set: per-address rate limits on every public
/// endpoint and on sign-in (console, portal, API keys), and a size limit on
/// every request body. (Slow clients: `SlowClientTests`, against the real server.)
@Suite struct AbuseLimitTests {
    static func limited(_ reply: APIHarness.Reply) -> Bool {
        reply.status == .tooManyRequests && (Int(reply.headers[.retryAfter] ?? "") ?? 0) >= 1
    }

    @Test func everyPublicPageCountsAgainstOneLimitPerAddress() async throws {
        var site = SiteConfiguration()
        site.publicRequestsPerMinute = 6
        try await withAPI(site: site) { api in
            // Pages and posts of every public kind, with tokens that are not real: each is answered (404/400) and counted.
            let paths: [(HTTPRequest.Method, String)] = [(.get, "/f/nope"), (.get, "/p/forged"), (.get, "/u/forged"), (.get, "/r/forged"),
                                                          (.get, "/confirm/forged"), (.get, "/portal")]
            for (method, path) in paths {
                let r = try await api.page(method, path)
                #expect(r.status != .tooManyRequests && r.status.code < 500, "\(path): \(r.status)")
            }
            for (method, path) in paths + [(.post, "/confirm/forged"), (.post, "/portal/signin/forged")] {
                let r = try await api.page(method, path, form: method == .post ? "x=1" : nil)
                #expect(Self.limited(r), "\(method) \(path) over the limit: \(r.status)")
            }
            let json = try await api.page(.post, "/f/nope", form: "email=a%40example.com", headers: [.accept: "application/json"])
            #expect(Self.limited(json) && json.headers[.contentType] == "application/problem+json", "\(json.text)")
            // The API, health and the console are not public pages: not counted here.
            #expect(try await api.send(.get, "/api/v1/topics").status == .ok)
            #expect(try await api.page(.get, "/healthz").status == .ok)
            #expect(try await api.page(.get, "/console/signin").status == .ok)
        }
    }

    @Test func guessingAPIKeysIsCutOffPerAddress() async throws {
        var site = SiteConfiguration()
        site.failedAuthenticationsPerMinute = 3
        try await withAPI(site: site) { api in
            #expect(try await api.send(.get, "/api/v1/topics").status == .ok, "good keys are not counted")
            for token in ["assent_nope_nope", "garbage", "assent_0123456789ab_wrong"] {
                #expect(try await api.send(.get, "/api/v1/topics", token: token).status == .unauthorized)
            }
            let cut = try await api.send(.get, "/api/v1/topics", token: "assent_again_again")
            #expect(cut.status == .tooManyRequests && cut.headers[.retryAfter] != nil && cut.text.contains("API key"), "\(cut.text)")
            #expect(try await api.send(.get, "/api/v1/topics", token: "garbage").status == .tooManyRequests)
            // A right key still gets through: a client sharing the address (a proxy, say) is not locked out.
            #expect(try await api.send(.get, "/api/v1/topics").status == .ok)
        }
    }

    @Test func signInIsLimitedOnTheConsoleAndThePortal() async throws {
        try await withAPI(site: SiteConfiguration(formPostsPerMinute: 3)) { api in
            for _ in 0..<3 {
                #expect(try await api.page(.post, "/console/signin", form: "email=admin%40example.com&password=wrong").status == .unauthorized)
            }
            let console = try await api.page(.post, "/console/signin", form: "email=admin%40example.com&password=wrong")
            #expect(Self.limited(console), "\(console.status)")
            for i in 0..<3 {
                #expect(try await api.page(.post, "/portal", form: "email=p\(i)%40example.com").status == .ok)
            }
            let portal = try await api.page(.post, "/portal", form: "email=p9%40example.com")
            #expect(Self.limited(portal), "\(portal.status)")
        }
    }

    @Test func everyRequestBodyHasASizeLimit() async throws {
        try await withAPI { api in
            try await api.createTopic("news", doubleOptIn: false)
            let id = try await api.createContact("ann@example.com")
            let big = { (bytes: Int) in String(repeating: "a", count: bytes) }
            // The JSON API: 64 KB (the batch check: 2 MB).
            let json = try await api.send(.post, "/api/v1/contacts", raw: #"{"email":"bob@example.com","name":""# + big(70_000) + #""}"#)
            #expect(json.status == .contentTooLarge && json.text.contains("larger than"), "\(json.status)")
            let batch = try await api.send(.post, "/api/v1/check", raw: #"{"topic":"news","emails":[""# + big(2_200_000) + #""]}"#)
            #expect(batch.status == .contentTooLarge, "\(batch.status)")
            let put = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", raw: #"{"source":"api","evidence":{"note":""# + big(70_000) + #""}}"#)
            #expect(put.status == .contentTooLarge, "\(put.status)")
            // Form-encoded pages and sign-in: 16 KB, on real forms and links.
            #expect(try await api.send(.post, "/api/v1/forms", json: ["id": "f", "title": "F", "topics": ["news"]]).status == .created)
            let links = try await api.send(.get, "/api/v1/contacts/\(id)/links").json
            let centre = try #require(URL(string: links["preferenceCentreUrl"] as? String ?? "")).path
            let unsubscribe = try #require(URL(string: links["unsubscribeUrl"] as? String ?? "")).path
            for path in ["/f/f", "/portal", centre, unsubscribe, "/console/signin", "/confirm/any"] {
                let r = try await api.page(.post, path, form: "email=" + big(20_000))
                #expect(r.status == .contentTooLarge, "\(path): \(r.status)")
            }
            // Nothing was written by any of them.
            #expect(try await api.ledger.store.contact(email: EmailAddress("bob@example.com")) == nil)
            #expect(try await api.ledger.store.events(contactID: UUID(uuidString: id)!, beforeSeq: nil, limit: 10).isEmpty)
        }
    }
}
