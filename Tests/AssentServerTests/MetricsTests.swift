import AssentCore
import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// `/metrics` in Prometheus' text format: requests and latency per route
/// pattern, consent changes per source, the outbox's backlog, the latest verification.
@Suite struct MetricsTests {
    /// The value of the series whose line starts with `prefix` (name and labels), if present.
    func value(_ text: String, _ prefix: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(prefix + " ") }.flatMap { Double($0.split(separator: " ").last!) }
    }

    @Test(arguments: StoreKind.available)
    func requestsConsentChangesAndTheOutboxAreCounted(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("news", doubleOptIn: false)
            try await api.createTopic("events", doubleOptIn: true)
            let id = try await api.createContact("ann@example.com")
            for granted in [true, false, true] {
                let r = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "news", "granted": granted]]])
                #expect(r.status == .ok)
            }
            // A web-form opt-in to a double opt-in topic queues a confirmation email (no worker runs here).
            let form = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "form", "preferences": [["topic": "events", "granted": true]]])
            #expect(form.status == .ok)
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)").status == .ok)
            #expect(try await api.send(.get, "/api/v1/contacts/not-an-id").status == .badRequest)

            let scrape = try await api.page(.get, "/metrics")
            #expect(scrape.status == .ok)
            #expect(scrape.headers[.contentType]?.hasPrefix("text/plain; version=0.0.4") == true)
            let text = scrape.text
            let put = #"method="PUT",route="/api/v1/contacts/{id}/preferences""#
            #expect(value(text, #"assent_http_requests_total{\#(put),status="2xx"}"#) == 4, "\(text)")
            #expect(value(text, #"assent_http_request_duration_seconds_count{\#(put)}"#) == 4)
            #expect(value(text, #"assent_http_requests_total{method="GET",route="/api/v1/contacts/{id}",status="2xx"}"#) == 1)
            #expect(value(text, #"assent_http_requests_total{method="GET",route="/api/v1/contacts/{id}",status="4xx"}"#) == 1)
            #expect(!text.contains(id), "ids never become labels")
            #expect(value(text, #"assent_consent_changes_total{source="api",action="granted"}"#) == 2)
            #expect(value(text, #"assent_consent_changes_total{source="api",action="withdrawn"}"#) == 1)
            #expect(value(text, #"assent_consent_changes_total{source="form",action="requested"}"#) == 1)
            #expect(value(text, "assent_outbox_pending") == 1)
            let age = try #require(value(text, "assent_outbox_oldest_pending_age_seconds"))
            #expect(age >= 0 && age < 60)
        }
    }

    @Test(arguments: StoreKind.available)
    func theLatestVerificationIsReported(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("news", doubleOptIn: false)
            let id = try await api.createContact("ann@example.com")
            for granted in [true, false, true] {
                _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "news", "granted": granted]]])
            }
            #expect(!(try await api.page(.get, "/metrics").text.contains("assent_verify")), "nothing to report before the first run")

            var scheduler = Scheduler(ledger: api.ledger)
            #expect(await scheduler.verifyIfDue() == nil, "off unless asked for")
            scheduler.verifyEvery = .seconds(3_600)
            let run = try #require(await scheduler.verifyIfDue())
            #expect(run.events == 3 && run.contacts == 1 && run.breaks == 0 && run.origin == "schedule")
            #expect(await scheduler.verifyIfDue() == nil, "not due again within the hour")
            var text = try await api.page(.get, "/metrics").text
            #expect(value(text, "assent_verify_ok") == 1, "\(text)")
            #expect(value(text, "assent_verify_events") == 3)
            #expect(value(text, "assent_verify_broken_chains") == 0)
            let finished = try #require(value(text, "assent_verify_last_run_timestamp_seconds"))
            #expect(abs(finished - Date().timeIntervalSince1970) < 60)

            // A later run that found breaks (here recorded as `assent verify` would) turns the status to 0.
            try await api.ledger.store.recordVerifyRun(VerifyRun(finishedAt: Date(), seconds: 0.5, contacts: 1, events: 3, breaks: 1, origin: "assent verify"))
            text = try await api.page(.get, "/metrics").text
            #expect(value(text, "assent_verify_ok") == 0)
            #expect(value(text, "assent_verify_broken_chains") == 1)
        }
    }
}
