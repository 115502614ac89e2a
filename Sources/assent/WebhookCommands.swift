import AssentCore
import AssentStore
import ArgumentParser
import Foundation

struct Webhooks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Signed webhooks: who is told about consent changes, and the delivery log.",
        subcommands: [Add.self, List.self, Show.self, Enable.self, Disable.self, Remove.self, Deliveries.self, Retry.self, Replay.self])

    /// `--since`: a date (midnight UTC) or a date-time.
    static func since(_ text: String) throws -> Date {
        let formatter = ISO8601DateFormatter()
        guard let date = formatter.date(from: text) ?? formatter.date(from: text + "T00:00:00Z") else {
            throw ValidationError("--since: '\(text)' is not a date such as 2026-11-01 or 2026-11-01T10:00:00Z")
        }
        return date
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Register a URL for some events; prints the signing secret once.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "An http or https URL.") var url: String
        @Option(name: .customLong("event"), help: "consent.changed, contact.created, contact.erased or dsr.request.created (repeat; default consent.changed).")
        var events: [String] = []
        @Option(name: .customLong("topic"), help: "For consent.changed: only this topic (repeat).") var topics: [String] = []
        @Option(name: .customLong("source"), help: "For consent.changed: only this source (repeat).") var sources: [String] = []
        @Option(help: "What it is for.") var description: String = ""
        @Flag(help: "Allow a URL on a loopback, link-local or private address (a receiver on this machine or your network).") var allowPrivateNetwork = false

        func run() async throws {
            let eventTypes = try (events.isEmpty ? ["consent.changed"] : events).map { text in
                guard let type = WebhookEventType(rawValue: text) else {
                    throw ValidationError("--event: '\(text)' is not one of \(WebhookEventType.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                return type
            }
            let sourceList = try sources.map { text in
                guard let source = ConsentSource(rawValue: text) else {
                    throw ValidationError("--source: '\(text)' is not one of \(ConsentSource.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                return source
            }
            let ledger = try await store.openLedger()
            let (endpoint, secret) = try await reportingErrors {
                try await ledger.createWebhook(url: url, description: description, events: eventTypes, topics: topics, sources: sourceList,
                                               allowPrivateNetwork: allowPrivateNetwork, createdBy: "command line")
            }
            try await ledger.audit(nil, "webhook_create", target: "webhook:\(endpoint.id)", detail: endpoint.url)
            print("""
                added webhook \(endpoint.id) -> \(endpoint.url) (\(endpoint.events.map(\.rawValue).joined(separator: ", ")))
                signing secret (shown only this once; give it to the receiver to check webhook-signature):

                    \(secret)
                """)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List webhooks with their pending and failed deliveries.")
        @OptionGroup var store: StoreOptions

        func run() async throws {
            let ledger = try await store.openLedger()
            let endpoints = try await ledger.store.webhookEndpoints()
            if endpoints.isEmpty { print("no webhooks yet; add one with 'assent webhooks add'") }
            for e in endpoints {
                let pending = try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: e.id, status: .pending, limit: 10_000)).count
                let failed = try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: e.id, status: .failed, limit: 10_000)).count
                print("\(e.id)  \(e.enabled ? "enabled " : "disabled")  \(e.url)  [\(Show.filters(e))]  \(pending) pending, \(failed) failed")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A webhook and its latest deliveries.")
        @OptionGroup var store: StoreOptions
        @Argument var id: String

        static func filters(_ e: WebhookEndpoint) -> String {
            var parts = [e.events.map(\.rawValue).joined(separator: ", ")]
            if !e.topics.isEmpty { parts.append("topics " + e.topics.joined(separator: ", ")) }
            if !e.sources.isEmpty { parts.append("sources " + e.sources.map(\.rawValue).joined(separator: ", ")) }
            if e.allowPrivateNetwork { parts.append("private network allowed") }
            return parts.joined(separator: "; ")
        }

        func run() async throws {
            let ledger = try await store.openLedger()
            let e = try await reportingErrors { try await ledger.existingWebhook(id) }
            print("\(e.id)  \(e.url)\n  \(Self.filters(e))\n  \(e.enabled ? "enabled" : "disabled"); added by \(e.createdBy) on \(e.createdAt.display)")
            if !e.description.isEmpty { print("  \(e.description)") }
            try await Deliveries.print(ledger, WebhookDeliveryQuery(endpointID: e.id, limit: 20))
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send this webhook's messages again (those that waited go out in order).")
        @OptionGroup var store: StoreOptions
        @Argument var id: String

        func run() async throws {
            let ledger = try await store.openLedger()
            _ = try await reportingErrors { try await ledger.updateWebhook(id: id) { $0.enabled = true } }
            try await ledger.audit(nil, "webhook_update", target: "webhook:\(id)", detail: "enabled")
            print("enabled webhook \(id)")
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop sending; new messages wait until it is enabled again.")
        @OptionGroup var store: StoreOptions
        @Argument var id: String

        func run() async throws {
            let ledger = try await store.openLedger()
            _ = try await reportingErrors { try await ledger.updateWebhook(id: id) { $0.enabled = false } }
            try await ledger.audit(nil, "webhook_update", target: "webhook:\(id)", detail: "disabled")
            print("disabled webhook \(id)")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a webhook and its delivery log.")
        @OptionGroup var store: StoreOptions
        @Argument var id: String

        func run() async throws {
            let ledger = try await store.openLedger()
            try await reportingErrors { try await ledger.deleteWebhook(id: id) }
            try await ledger.audit(nil, "webhook_delete", target: "webhook:\(id)")
            print("deleted webhook \(id)")
        }
    }

    struct Deliveries: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The delivery log, newest first: each delivery's status and last answer; --id for every attempt.")
        @OptionGroup var store: StoreOptions
        @Option(help: "Only this webhook's.") var webhook: String?
        @Option(help: "pending, delivered or failed.") var status: String?
        @Option(help: "One delivery: its payload and every attempt.") var id: String?
        @Option(help: "Only those made since a date (2026-11-01) or date-time.") var since: String?
        @Option(help: "How many.") var limit: Int = 50

        static func print(_ ledger: Ledger, _ query: WebhookDeliveryQuery) async throws {
            let deliveries = try await ledger.store.webhookDeliveries(query)
            if deliveries.isEmpty { Swift.print("  no deliveries") }
            for d in deliveries {
                let last = d.lastStatusCode.map { "HTTP \($0)" } ?? d.lastError.map { String($0.prefix(60)) } ?? "-"
                Swift.print("  \(d.id.uuidString.lowercased())  \(d.createdAt.display)  \(d.eventType.rawValue)  \(d.status.rawValue)  attempts \(d.attempts)  \(last)")
            }
        }

        func run() async throws {
            let ledger = try await store.openLedger()
            if let id {
                guard let uuid = UUID(uuidString: id), let d = try await ledger.store.webhookDelivery(id: uuid) else { throw ValidationError("--id: no delivery '\(id)'") }
                Swift.print("\(d.id.uuidString.lowercased())  \(d.eventType.rawValue) to \(d.endpointID): \(d.status.rawValue)")
                Swift.print(String(decoding: d.payload, as: UTF8.self))
                for a in try await ledger.store.webhookAttempts(deliveryID: d.id) {
                    Swift.print("  #\(a.number)  \(a.at.display)  \(a.statusCode.map { "HTTP \($0)" } ?? "no answer")  \(a.latencyMilliseconds) ms  \(a.error ?? a.response?.prefix(80).description ?? "")")
                }
                return
            }
            let parsed = try status.map { text in
                guard let s = WebhookDelivery.Status(rawValue: text) else { throw ValidationError("--status: '\(text)' is not pending, delivered or failed") }
                return s
            }
            let from = try since.map { try Webhooks.since($0) }
            try await Self.print(ledger, WebhookDeliveryQuery(endpointID: webhook, status: parsed, since: from, limit: max(1, limit)))
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send failed deliveries again: one (--id), a webhook's (--webhook) or all (--all).")
        @OptionGroup var store: StoreOptions
        @Option(help: "One delivery.") var id: String?
        @Option(help: "Every failed delivery of this webhook.") var webhook: String?
        @Flag(help: "Every failed delivery.") var all = false

        func run() async throws {
            guard id != nil || webhook != nil || all else { throw ValidationError("name --id, --webhook or --all") }
            let ids = try id.map { text in
                guard let uuid = UUID(uuidString: text) else { throw ValidationError("--id: '\(text)' is not a delivery id") }
                return [uuid]
            }
            let ledger = try await store.openLedger()
            if let webhook { _ = try await reportingErrors { try await ledger.existingWebhook(webhook) } }
            let count = try await ledger.store.retryWebhookDeliveries(ids: ids, endpointID: webhook, now: Date())
            try await ledger.audit(nil, "webhook_retry", target: webhook.map { "webhook:\($0)" }, detail: "\(count) failed")
            Swift.print("\(count) failed deliver\(count == 1 ? "y is" : "ies are") pending again")
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send a webhook everything it was sent since a moment again (new ids, original order).")
        @OptionGroup var store: StoreOptions
        @Option(help: "The webhook.") var webhook: String
        @Option(help: "A date (2026-11-01) or date-time (2026-11-01T10:00:00Z).") var since: String

        func run() async throws {
            let date = try Webhooks.since(since)
            let ledger = try await store.openLedger()
            let count = try await reportingErrors { try await ledger.replayWebhooks(endpointID: webhook, since: date) }
            try await ledger.audit(nil, "webhook_replay", target: "webhook:\(webhook)", detail: "\(count) since \(date.display)")
            Swift.print("queued \(count) deliver\(count == 1 ? "y" : "ies") to \(webhook) again")
        }
    }
}
