import AssentCore
import AssentStore
import Foundation
import HTTPTypes
import Hummingbird

/// Console pages for webhooks: the list and a form to add one (its secret is
/// shown once), a webhook's page with its delivery log, one delivery with its
/// payload and every attempt; enable, disable, retry, replay and delete.
/// Admins and auditors read; admins act.
extension ConsolePages {
    var webhookRoutes: [ConsoleRoute] {
        [
            ConsoleRoute(method: .get, path: "/console/webhooks", roles: Self.readers) { _, _, v in try await webhooks(v!) },
            ConsoleRoute(method: .post, path: "/console/webhooks", roles: Self.admins) { _, c, v in try await createWebhook(c, v!) },
            ConsoleRoute(method: .get, path: "/console/webhooks/{id}", roles: Self.readers) { r, c, v in try await webhook(r, c, v!) },
            ConsoleRoute(method: .post, path: "/console/webhooks/{id}/enabled", roles: Self.admins) { r, c, v in try await setWebhookEnabled(r, c, v!) },
            ConsoleRoute(method: .post, path: "/console/webhooks/{id}/retry", roles: Self.admins) { r, c, v in try await retryWebhook(r, c, v!) },
            ConsoleRoute(method: .post, path: "/console/webhooks/{id}/replay", roles: Self.admins) { r, c, v in try await replayWebhook(r, c, v!) },
            ConsoleRoute(method: .post, path: "/console/webhooks/{id}/delete", roles: Self.admins) { _, c, v in try await deleteWebhook(c, v!) },
            ConsoleRoute(method: .get, path: "/console/webhooks/{id}/deliveries/{delivery}", roles: Self.readers) { _, c, v in try await delivery(c, v!) },
        ]
    }

    func webhooks(_ visit: ConsoleVisit, errors: [String] = [], status: HTTPResponse.Status = .ok) async throws -> Response {
        var rows: [[String: Any]] = []
        for e in try await ledger.store.webhookEndpoints() {
            let pending = try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: e.id, status: .pending, limit: 10_000)).count
            let failed = try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: e.id, status: .failed, limit: 10_000)).count
            rows.append(["id": e.id, "url": e.url, "events": e.events.map(\.rawValue).joined(separator: ", "), "enabled": e.enabled,
                         "pending": pending, "failed": failed, "description": e.description])
        }
        let topics = try await ledger.store.topics(includeRetired: false)
        let model: [String: Any] = [
            "webhooks": rows, "hasWebhooks": !rows.isEmpty,
            "eventChoices": WebhookEventType.allCases.map { ["value": $0.rawValue, "checked": $0 == .consentChanged] },
            "topicChoices": topics.map { ["key": $0.key, "title": $0.title] },
            "sourceChoices": ConsentSource.allCases.map { ["value": $0.rawValue] },
        ]
        return render("console-webhooks", title: "Webhooks", visit: visit, nav: "Webhooks", status: status, model: model, errors: errors)
    }

    func createWebhook(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let f = visit.form
        do {
            let (endpoint, secret) = try await ledger.createWebhook(
                url: f.value("url") ?? "", description: f.value("description") ?? "",
                events: f.values("event").compactMap(WebhookEventType.init(rawValue:)), topics: f.values("topic"),
                sources: f.values("source").compactMap(ConsentSource.init(rawValue:)), allowPrivateNetwork: f.value("private") == "1",
                createdBy: visit.user.email.value)
            try await ledger.audit(visit.user, "webhook_create", target: "webhook:\(endpoint.id)", detail: endpoint.url, ipAddress: context.remoteIP)
            return message(.ok, title: "Webhook added", paragraphs: ["\(endpoint.url) (id \(endpoint.id)) will be sent \(endpoint.events.map(\.rawValue).joined(separator: ", "))."],
                           visit: visit, secret: ("Its signing secret: give it to the receiver to check the webhook-signature header.", secret),
                           back: ("/console/webhooks/\(endpoint.id)", "Open the webhook"))
        } catch DomainError.invalid(let errors) {
            return try await webhooks(visit, errors: errors.map(\.description), status: .unprocessableContent)
        }
    }

    func webhook(_ request: Request, _ context: AssentRequestContext, _ visit: ConsoleVisit, errors: [String] = [], status: HTTPResponse.Status = .ok,
                 flash: String? = nil) async throws -> Response {
        let e = try await ledger.existingWebhook(try context.parameters.require("id"))
        let filter = (try? Query(request))?.string("status").flatMap(WebhookDelivery.Status.init(rawValue:))
        let deliveries = try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: e.id, status: filter, limit: 100))
        let model: [String: Any] = [
            "webhook": ["id": e.id, "url": e.url, "description": e.description, "events": e.events.map(\.rawValue).joined(separator: ", "),
                        "topics": e.topics.isEmpty ? "all" : e.topics.joined(separator: ", "),
                        "sources": e.sources.isEmpty ? "all" : e.sources.map(\.rawValue).joined(separator: ", "),
                        "enabled": e.enabled, "private": e.allowPrivateNetwork, "createdBy": e.createdBy, "createdAt": time(e.createdAt)],
            "deliveries": deliveries.map { d -> [String: Any] in
                ["id": d.id.uuidString.lowercased(), "created": time(d.createdAt), "event": d.eventType.rawValue, "status": d.status.rawValue,
                 "attempts": d.attempts, "last": d.lastStatusCode.map { "HTTP \($0)" } ?? d.lastError.map { String($0.prefix(80)) } ?? "",
                 "next": d.status == .pending ? time(d.nextAttemptAt) : ""]
            },
            "hasDeliveries": !deliveries.isEmpty, "filter": filter?.rawValue ?? "all",
            "today": ConsolePages.iso(ledger.environment.now()).prefix(10).description,
        ]
        return render("console-webhook", title: "Webhook \(e.id)", visit: visit, nav: "Webhooks", status: status, model: model, flash: flash, errors: errors)
    }

    func setWebhookEnabled(_ request: Request, _ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let id = try context.parameters.require("id")
        let enabled = visit.form.value("enabled") == "1"
        do {
            _ = try await ledger.updateWebhook(id: id) { $0.enabled = enabled }
        } catch DomainError.invalid(let errors) {
            return try await webhook(request, context, visit, errors: errors.map(\.description), status: .unprocessableContent)
        }
        try await ledger.audit(visit.user, "webhook_update", target: "webhook:\(id)", detail: enabled ? "enabled" : "disabled", ipAddress: context.remoteIP)
        return try await webhook(request, context, visit, flash: enabled ? "Enabled: waiting messages go out in order." : "Disabled: new messages wait until it is enabled.")
    }

    func retryWebhook(_ request: Request, _ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let e = try await ledger.existingWebhook(try context.parameters.require("id"))
        var ids: [UUID]?
        if let text = visit.form.value("delivery") {
            guard let id = UUID(uuidString: text) else {
                return try await webhook(request, context, visit, errors: ["Delivery: '\(text.prefix(40))' is not a delivery id."], status: .badRequest)
            }
            ids = [id]
        }
        let count = try await ledger.store.retryWebhookDeliveries(ids: ids, endpointID: e.id, now: ledger.environment.now())
        try await ledger.audit(visit.user, "webhook_retry", target: "webhook:\(e.id)", detail: "\(count) failed", ipAddress: context.remoteIP)
        return try await webhook(request, context, visit, flash: "\(count) failed \(count == 1 ? "delivery is" : "deliveries are") pending again.")
    }

    func replayWebhook(_ request: Request, _ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let e = try await ledger.existingWebhook(try context.parameters.require("id"))
        let text = visit.form.value("since") ?? ""
        guard let since = ISO8601DateFormatter().date(from: text + "T00:00:00Z") else {
            return try await webhook(request, context, visit, errors: ["Since: '\(text.prefix(20))' is not a date such as 2026-11-01."], status: .unprocessableContent)
        }
        let count = try await ledger.replayWebhooks(endpointID: e.id, since: since)
        try await ledger.audit(visit.user, "webhook_replay", target: "webhook:\(e.id)", detail: "\(count) since \(text)", ipAddress: context.remoteIP)
        return try await webhook(request, context, visit, flash: "\(count) \(count == 1 ? "message" : "messages") since \(text) will be sent again.")
    }

    func deleteWebhook(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let id = try context.parameters.require("id")
        try await ledger.deleteWebhook(id: id)
        try await ledger.audit(visit.user, "webhook_delete", target: "webhook:\(id)", ipAddress: context.remoteIP)
        return redirect("/console/webhooks")
    }

    func delivery(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let e = try await ledger.existingWebhook(try context.parameters.require("id"))
        let text = try context.parameters.require("delivery")
        guard let id = UUID(uuidString: text), let d = try await ledger.store.webhookDelivery(id: id), d.endpointID == e.id else {
            throw DomainError.notFound(what: "delivery", id: String(text.prefix(64)))
        }
        let pretty = (try? JSONSerialization.jsonObject(with: d.payload))
            .flatMap { try? JSONSerialization.data(withJSONObject: $0, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) }
            .map { String(decoding: $0, as: UTF8.self) } ?? String(decoding: d.payload, as: UTF8.self)
        let attempts = try await ledger.store.webhookAttempts(deliveryID: d.id).map { a -> [String: Any] in
            ["number": a.number, "at": time(a.at), "status": a.statusCode.map { "HTTP \($0)" } ?? "no answer", "latency": a.latencyMilliseconds,
             "answer": a.error ?? a.response ?? ""]
        }
        let model: [String: Any] = [
            "webhookId": e.id, "delivery": ["id": d.id.uuidString.lowercased(), "event": d.eventType.rawValue, "status": d.status.rawValue,
                                            "created": time(d.createdAt), "delivered": d.deliveredAt.map { time($0) } ?? "", "failed": d.status == .failed],
            "payload": pretty, "attempts": attempts, "hasAttempts": !attempts.isEmpty,
        ]
        return render("console-delivery", title: "Delivery \(d.id.uuidString.lowercased().prefix(8))", visit: visit, nav: "Webhooks", model: model)
    }
}
