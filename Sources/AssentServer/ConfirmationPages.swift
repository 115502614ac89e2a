import AssentCore
import AssentStore
import Foundation
import HTTPTypes
import Hummingbird

/// The double opt-in landing page. A GET only shows what the link is for and
/// a Confirm button (mail scanners follow GET links); only the POST changes state.
struct ConfirmationPages: Sendable {
    let ledger: Ledger
    let pages: Pages

    func show(_ request: Request, _ context: AssentRequestContext) async throws -> Response {
        let token = try context.parameters.require("token")
        let status = try await ledger.linkStatus(token: token)
        guard case .valid(let record) = status else { return try await page(for: status, request: request) }
        let language = try await language(for: record.contactID, request: request)
        return try await render(status: .ok, language: language, title: pages.word("confirmTitle", language), message: nil, confirmed: [],
                                pending: record.remainingTopics, action: "/confirm/\(token)")
    }

    func confirm(_ request: Request, _ context: AssentRequestContext) async throws -> Response {
        var request = request
        let token = try context.parameters.require("token")
        let form = FormBody(try await request.collectText(upTo: 16 * 1024))
        let status = try await ledger.linkStatus(token: token)
        guard case .valid(let record) = status else { return try await page(for: status, request: request) }
        let language = try await language(for: record.contactID, request: request)
        let chosen = form.values("topic").filter { record.remainingTopics.contains($0) }
        if chosen.isEmpty {
            return try await render(status: .unprocessableContent, language: language, title: pages.word("confirmTitle", language),
                                    message: pages.word("chooseOne", language), confirmed: [], pending: record.remainingTopics, action: "/confirm/\(token)")
        }
        let outcome: Ledger.LinkStatus, result: ChangeResult?
        do {
            (outcome, result) = try await ledger.confirm(token: token, topics: chosen, ipAddress: context.remoteIP,
                                                         userAgent: request.headers[.userAgent])
        } catch let error as DomainError {
            // A person clicking gets a page, not a JSON problem.
            return try await render(status: .unprocessableContent, language: language, title: pages.word("confirmTitle", language),
                                    message: error.description, confirmed: [], pending: [], action: "")
        }
        guard case .valid = outcome, let result else { return try await page(for: outcome, request: request) }
        let confirmed = result.events.map(\.topicKey)
        let after = try await ledger.linkStatus(token: token)
        let remaining: [String] = if case .valid(let r) = after { r.remainingTopics } else { [] }
        return try await render(status: .ok, language: language, title: pages.word(confirmed.isEmpty ? "nothingTitle" : "doneTitle", language),
                                message: pages.word(confirmed.isEmpty ? "nothingMessage" : "doneMessage", language),
                                confirmed: confirmed, pending: remaining, action: "/confirm/\(token)", legendKey: "stillPending")
    }

    private func page(for status: Ledger.LinkStatus, request: Request) async throws -> Response {
        let language = pages.language(request: request)
        let (code, key): (HTTPResponse.Status, String) = switch status {
        case .unknown, .valid: (.notFound, "unknown")
        case .expired: (.gone, "expired")
        case .superseded: (.gone, "superseded")
        case .used: (.gone, "used")
        }
        return pages.message(code, language: language, title: pages.word(key + "Title", language), paragraphs: [pages.word(key + "Message", language)])
    }

    private func language(for contactID: UUID, request: Request) async throws -> String {
        pages.language(try await ledger.store.contact(id: contactID)?.locale, request: request)
    }

    private func render(status: HTTPResponse.Status, language: String, title: String, message: String?, confirmed: [String],
                        pending: [String], action: String, legendKey: String = "confirmLegend") async throws -> Response {
        var confirmedModel: [[String: Any]] = []
        for key in confirmed {
            confirmedModel.append(["title": try await ledger.store.topic(key: key)?.title ?? key])
        }
        var pendingModel: [[String: Any]] = []
        for key in pending {
            guard let topic = try await ledger.store.topic(key: key) else { continue }
            let notice = try await ledger.store.notice(topicKey: key, version: topic.currentNoticeVersion)
            pendingModel.append(["key": key, "title": topic.title, "notice": notice?.text ?? ""])
        }
        var model: [String: Any] = ["title": title, "legend": pages.word(legendKey, language), "action": action, "confirmed": confirmedModel,
                                    "topics": pendingModel, "hasConfirmed": !confirmedModel.isEmpty, "hasTopics": !pendingModel.isEmpty]
        if let message { model["message"] = message }
        return pages.render("confirm", language: language, status: status, model: model)
    }
}
