import Foundation
import Logging

/// Delivers a message somewhere. Live transports: SMTP and a folder of `.eml` files.
public protocol MailTransport: Sendable {
    func send(_ message: MailMessage) async throws
    /// What it is, for start-up messages.
    var summary: String { get }
}

/// Why delivery failed, and whether trying again could help.
public enum MailError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Try again later (network down, 4xx reply).
    case transient(String)
    /// Will never work as it is (5xx reply, bad address).
    case permanent(String)

    public var description: String {
        switch self {
        case .transient(let why): why
        case .permanent(let why): why
        }
    }
}

/// The zero-configuration default: each message becomes one `.eml` file in
/// a folder (open it with any mail program), and its links are logged so a
/// person trying Assent out can click them.
public struct FileTransport: MailTransport {
    public let directory: URL
    let logger: Logger

    public init(directory: URL, logger: Logger = Logger(label: "assent.mail")) {
        self.directory = directory
        self.logger = logger
    }

    public var summary: String { "writing emails as .eml files to \(directory.path)" }

    public func send(_ message: MailMessage) async throws {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            // Names sort in the order the files were written: the write time to
            // the millisecond (not the message's Date header, which is per batch).
            let now = Date()
            let stamp = ISO8601DateFormatter.string(from: now, timeZone: TimeZone(identifier: "UTC")!,
                                                    formatOptions: [.withYear, .withMonth, .withDay, .withTime])
                + String(format: ".%03d", Int(now.timeIntervalSince1970 * 1000) % 1000)
            let file = directory.appendingPathComponent("\(stamp)-\(message.messageID.prefix { $0 != "@" }).eml")
            try message.rendered().write(to: file, options: .atomic)
            let links = message.text.split(whereSeparator: \.isWhitespace).filter { $0.hasPrefix("http://") || $0.hasPrefix("https://") }
                .map { $0.hasSuffix(".") ? $0.dropLast() : $0 }
            logger.info("email to \(message.to.address) written to \(file.path)\(links.isEmpty ? "" : "; links: " + links.joined(separator: " "))")
        } catch {
            throw MailError.transient("cannot write to \(directory.path): \(error)")
        }
    }
}
