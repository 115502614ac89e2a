import AssentCore
import AssentMail
import AssentStore
import ArgumentParser
import Foundation
import Logging

/// How `assent serve` sends email. With no SMTP URL, emails become `.eml`
/// files in a folder, so Assent works with no mail server at all.
struct MailOptions: ParsableArguments {
    private static let env = ProcessInfo.processInfo.environment

    @Option(help: ArgumentHelp("SMTP server: smtp://user:password@host:587 (STARTTLS required; add ?starttls=opportunistic or ?starttls=none), or smtps://host:465 for implicit TLS (env ASSENT_SMTP_URL). Unset: write .eml files.", valueName: "url"))
    var smtpURL: String = env["ASSENT_SMTP_URL"] ?? ""

    @Option(help: ArgumentHelp("Folder for .eml files when no SMTP server is set (env ASSENT_MAIL_DIR).", valueName: "path"))
    var mailDir: String = env["ASSENT_MAIL_DIR"] ?? "assent-mail"

    @Option(help: ArgumentHelp("Sender of every email (env ASSENT_MAIL_FROM).", valueName: "address"))
    var mailFrom: String = env["ASSENT_MAIL_FROM"] ?? "Assent <no-reply@assent.localhost>"

    @Option(help: ArgumentHelp("The organisation's name, as emails and pages show it (env ASSENT_ORGANISATION).", valueName: "name"))
    var organisation: String = env["ASSENT_ORGANISATION"] ?? "Assent"

    @Option(help: ArgumentHelp("Base URL people use to reach this server, for links in emails (env ASSENT_PUBLIC_URL; default http://HOST:PORT).", valueName: "url"))
    var publicURL: String = env["ASSENT_PUBLIC_URL"] ?? ""

    @Option(help: ArgumentHelp("Folder of Mustache templates overriding the shipped ones, laid out as <locale>/<name>.<part>.mustache (env ASSENT_TEMPLATES_DIR).", valueName: "path"))
    var templates: String = env["ASSENT_TEMPLATES_DIR"] ?? ""

    @Option(help: ArgumentHelp("Privacy policy URL named in consent receipts (env ASSENT_POLICY_URL).", valueName: "url"))
    var policyURL: String = env["ASSENT_POLICY_URL"] ?? ""

    @Option(help: ArgumentHelp("Jurisdiction named in consent receipts (env ASSENT_JURISDICTION).", valueName: "code"))
    var jurisdiction: String = env["ASSENT_JURISDICTION"] ?? "EU"

    @Option(help: ArgumentHelp("The controller's postal address in receipts (env ASSENT_CONTROLLER_ADDRESS).", valueName: "text"))
    var controllerAddress: String = env["ASSENT_CONTROLLER_ADDRESS"] ?? ""

    @Option(help: ArgumentHelp("The controller's phone number in receipts (env ASSENT_CONTROLLER_PHONE).", valueName: "text"))
    var controllerPhone: String = env["ASSENT_CONTROLLER_PHONE"] ?? ""

    @Option(help: ArgumentHelp("Days a double opt-in link stays valid (env ASSENT_CONFIRMATION_DAYS).", valueName: "days"))
    var confirmationDays: Int = Int(env["ASSENT_CONFIRMATION_DAYS"] ?? "") ?? 7

    @Option(help: ArgumentHelp("Changes that email the person their signed receipt: a comma-separated list of confirmed, granted, withdrawn (env ASSENT_RECEIPT_EMAILS; default confirmed; 'none' for none).", valueName: "actions"))
    var receiptEmails: String = env["ASSENT_RECEIPT_EMAILS"] ?? "confirmed"

    func receiptActions() throws -> Set<ConsentAction> {
        if receiptEmails.trimmingCharacters(in: .whitespaces) == "none" { return [] }
        var actions: Set<ConsentAction> = []
        for part in receiptEmails.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            guard let action = ConsentAction(rawValue: part), [.confirmed, .granted, .withdrawn].contains(action) else {
                throw ValidationError("--receipt-emails: '\(part)' must be confirmed, granted or withdrawn (or 'none')")
            }
            actions.insert(action)
        }
        return actions
    }

    func validate() throws {
        _ = try receiptActions()
        guard (1...90).contains(confirmationDays) else { throw ValidationError("--confirmation-days: must be from 1 to 90") }
        let from = MailAddress(parsing: mailFrom)
        guard (try? EmailAddress(from.address)) != nil else { throw ValidationError("--mail-from: '\(mailFrom)' has no valid email address") }
        if !publicURL.isEmpty {
            guard let url = URL(string: publicURL), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
                throw ValidationError("--public-url: '\(publicURL)' must be an http:// or https:// URL")
            }
        }
        if !smtpURL.isEmpty { _ = try smtpConfiguration() }
    }

    func smtpConfiguration() throws -> SMTPConfiguration? {
        guard !smtpURL.isEmpty else { return nil }
        do {
            return try SMTPConfiguration(url: smtpURL)
        } catch let error as MailError {
            throw ValidationError("--smtp-url: \(error)")
        }
    }

    func transport(logger: Logger) throws -> any MailTransport {
        if let smtp = try smtpConfiguration() { return SMTPTransport(configuration: smtp, logger: logger) }
        return FileTransport(directory: URL(fileURLWithPath: mailDir), logger: logger)
    }
}

/// The public base URL, settable once the server knows its port.
final class PublicURL: @unchecked Sendable {
    private let lock = NSLock()
    private var configured: String?
    private var fallback = "http://127.0.0.1:8080"

    init(_ configured: String?) { self.configured = configured }

    func setDefault(_ url: String) { lock.withLock { fallback = url } }

    var value: String { lock.withLock { configured ?? fallback } }
}
