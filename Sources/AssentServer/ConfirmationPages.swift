import AssentCore
import AssentStore
import Foundation
import HTTPTypes
import Hummingbird
import Mustache

/// The double opt-in landing page. A GET only shows what the link is for and
/// a Confirm button (mail scanners follow GET links); only the POST changes state.
struct ConfirmationPages: Sendable {
    let ledger: Ledger
    let library: MustacheLibrary

    init(ledger: Ledger) async throws {
        self.ledger = ledger
        guard let pages = Bundle.module.resourceURL?.appendingPathComponent("pages").path else {
            throw APIError(.internalServerError, detail: "page templates are missing")
        }
        self.library = try await MustacheLibrary(directory: pages)
    }

    func show(_ request: Request, _ context: AssentRequestContext) async throws -> Response {
        let token = try context.parameters.require("token")
        let status = try await ledger.linkStatus(token: token)
        guard case .valid(let record) = status else { return try await page(for: status, request: request) }
        let strings = try await strings(for: record.contactID, request: request)
        return try await render(status: .ok, strings: strings, title: strings.confirmTitle, message: nil, confirmed: [],
                                pending: record.remainingTopics, action: "/confirm/\(token)")
    }

    func confirm(_ request: Request, _ context: AssentRequestContext) async throws -> Response {
        var request = request
        let token = try context.parameters.require("token")
        let body = try await request.collectBody(upTo: 16 * 1024)
        let form = FormBody(String(buffer: body))
        let status = try await ledger.linkStatus(token: token)
        guard case .valid(let record) = status else { return try await page(for: status, request: request) }
        let strings = try await strings(for: record.contactID, request: request)
        let chosen = form.values("topic").filter { record.remainingTopics.contains($0) }
        if chosen.isEmpty {
            return try await render(status: .unprocessableContent, strings: strings, title: strings.confirmTitle, message: strings.chooseOne,
                                    confirmed: [], pending: record.remainingTopics, action: "/confirm/\(token)")
        }
        let outcome: Ledger.LinkStatus, result: ChangeResult?
        do {
            (outcome, result) = try await ledger.confirm(token: token, topics: chosen, ipAddress: context.remoteIP,
                                                         userAgent: request.headers[.userAgent])
        } catch let error as DomainError {
            // A person clicking gets a page, not a JSON problem.
            return try await render(status: .unprocessableContent, strings: strings, title: strings.confirmTitle, message: error.description,
                                    confirmed: [], pending: [], action: "")
        }
        guard case .valid = outcome, let result else { return try await page(for: outcome, request: request) }
        let confirmed = result.events.map(\.topicKey)
        let after = try await ledger.linkStatus(token: token)
        let remaining: [String] = if case .valid(let r) = after { r.remainingTopics } else { [] }
        return try await render(status: .ok, strings: strings, title: confirmed.isEmpty ? strings.nothingTitle : strings.doneTitle,
                                message: confirmed.isEmpty ? strings.nothingMessage : strings.doneMessage,
                                confirmed: confirmed, pending: remaining, action: "/confirm/\(token)",
                                pendingLegend: strings.stillPending)
    }

    private func page(for status: Ledger.LinkStatus, request: Request) async throws -> Response {
        let strings = PageStrings.forLanguage(PageStrings.language(acceptLanguage: request.headers[.acceptLanguage]))
        let (code, title, message): (HTTPResponse.Status, String, String) = switch status {
        case .unknown, .valid: (.notFound, strings.unknownTitle, strings.unknownMessage)
        case .expired: (.gone, strings.expiredTitle, strings.expiredMessage)
        case .superseded: (.gone, strings.supersededTitle, strings.supersededMessage)
        case .used: (.gone, strings.usedTitle, strings.usedMessage)
        }
        return try await render(status: code, strings: strings, title: title, message: message, confirmed: [], pending: [], action: "")
    }

    private func strings(for contactID: UUID, request: Request) async throws -> PageStrings {
        let locale = try await ledger.store.contact(id: contactID)?.locale
        return PageStrings.forLanguage(locale.map { String($0.lowercased().prefix { $0 != "-" }) }
            ?? PageStrings.language(acceptLanguage: request.headers[.acceptLanguage]))
    }

    private func render(status: HTTPResponse.Status, strings: PageStrings, title: String, message: String?, confirmed: [String],
                        pending: [String], action: String, pendingLegend: String? = nil) async throws -> Response {
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
        var model: [String: Any] = ["lang": strings.language, "title": title, "legend": pendingLegend ?? strings.legend,
                                    "confirmSelected": strings.confirm, "action": action, "confirmed": confirmedModel, "topics": pendingModel,
                                    "hasConfirmed": !confirmedModel.isEmpty, "hasTopics": !pendingModel.isEmpty]
        if let message { model["message"] = message }
        let html = library.render(model, withTemplate: "confirm") ?? "<!DOCTYPE html><title>\(title)</title><p>\(title)</p>"
        return Response(status: status, headers: PageHeaders.html, body: .init(byteBuffer: ByteBuffer(string: html)))
    }
}

/// Headers for every HTML page: no script at all, not framed, no Referer
/// (page URLs carry secrets), never cached.
enum PageHeaders {
    static var html: HTTPFields {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.contentSecurityPolicy] = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        headers[.xContentTypeOptions] = "nosniff"
        headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        headers[.cacheControl] = "no-store"
        return headers
    }
}

/// `application/x-www-form-urlencoded` values, repeated names kept.
struct FormBody {
    let pairs: [(String, String)]

    init(_ text: String) {
        pairs = text.split(separator: "&").map { part in
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String {
                String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? ""
            }
            return (decode(kv[0]), kv.count > 1 ? decode(kv[1]) : "")
        }
    }

    func values(_ name: String) -> [String] { pairs.filter { $0.0 == name }.map(\.1) }
}

/// The words of the pages, in every shipped language.
struct PageStrings: Sendable {
    var language: String
    var confirmTitle, legend, confirm, chooseOne, doneTitle, doneMessage, stillPending, nothingTitle, nothingMessage: String
    var unknownTitle, unknownMessage, expiredTitle, expiredMessage, supersededTitle, supersededMessage, usedTitle, usedMessage: String

    static let english = PageStrings(
        language: "en", confirmTitle: "Confirm your subscription", legend: "You asked to receive emails about:", confirm: "Confirm",
        chooseOne: "Please choose at least one topic.", doneTitle: "Thank you", doneMessage: "You are now subscribed to:",
        stillPending: "Still waiting for your confirmation:", nothingTitle: "Nothing to confirm",
        nothingMessage: "These topics were changed in the meantime, so nothing was confirmed.",
        unknownTitle: "This link is not valid", unknownMessage: "Check that you copied the whole link from the email.",
        expiredTitle: "This link has expired", expiredMessage: "Please sign up again to get a new link.",
        supersededTitle: "A newer link replaced this one", supersededMessage: "Please use the link in the most recent email we sent you.",
        usedTitle: "Already confirmed", usedMessage: "Everything this link was for is already confirmed. There is nothing more to do.")

    static let german = PageStrings(
        language: "de", confirmTitle: "Bestätigen Sie Ihr Abonnement", legend: "Sie möchten E-Mails zu diesen Themen erhalten:",
        confirm: "Bestätigen", chooseOne: "Bitte wählen Sie mindestens ein Thema.", doneTitle: "Vielen Dank",
        doneMessage: "Sie haben jetzt abonniert:", stillPending: "Noch nicht bestätigt:", nothingTitle: "Nichts zu bestätigen",
        nothingMessage: "Diese Themen wurden inzwischen geändert, daher wurde nichts bestätigt.",
        unknownTitle: "Dieser Link ist ungültig", unknownMessage: "Bitte prüfen Sie, ob Sie den ganzen Link aus der E-Mail kopiert haben.",
        expiredTitle: "Dieser Link ist abgelaufen", expiredMessage: "Bitte melden Sie sich erneut an, um einen neuen Link zu erhalten.",
        supersededTitle: "Ein neuerer Link ersetzt diesen", supersededMessage: "Bitte verwenden Sie den Link aus unserer neuesten E-Mail.",
        usedTitle: "Bereits bestätigt", usedMessage: "Alles, wofür dieser Link galt, ist bereits bestätigt. Es ist nichts mehr zu tun.")

    static func forLanguage(_ language: String) -> PageStrings { language == "de" ? german : english }

    static func language(acceptLanguage: String?) -> String {
        let first = acceptLanguage?.split(separator: ",").first.map { String($0.prefix { $0 != ";" && $0 != "-" }).trimmingCharacters(in: .whitespaces).lowercased() }
        return first == "de" ? "de" : "en"
    }
}
