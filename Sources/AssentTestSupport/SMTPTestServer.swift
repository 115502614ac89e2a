import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real SMTP server process (scripts/smtp-test-server.py, on aiosmtpd)
/// that stores what it receives in a Maildir, for tests of the SMTP path.
public final class SMTPTestServer: @unchecked Sendable {
    public let port: Int
    public let maildir: URL
    /// The self-signed certificate to trust, when started with STARTTLS.
    public let certificate: URL?
    private let process = Process()
    private let user: String?, password: String?

    /// Whether to run SMTP tests: always under CI=true (a missing server then
    /// fails the run), else when scripts/test says the server is installed
    /// (ASSENT_TEST_SMTP=1). Decided without starting a process, because
    /// test traits are evaluated while tests are being discovered.
    public static var shouldRun: Bool {
        TestPostgres.isCI || ProcessInfo.processInfo.environment["ASSENT_TEST_SMTP"] == "1"
    }

    public static var script: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/smtp-test-server.py")
    }

    /// Starts on `port` (a free one when nil) and waits until it listens.
    public init(port: Int? = nil, starttls: Bool = false, implicitTLS: Bool = false, loginOnly: Bool = false,
                user: String? = nil, password: String? = nil, directory: URL? = nil) throws {
        let dir = try directory ?? TestDirectory.make()
        self.port = try port ?? freeLocalPort()
        self.maildir = dir.appendingPathComponent("maildir")
        self.certificate = starttls || implicitTLS ? dir.appendingPathComponent("smtp-ca.pem") : nil
        self.user = user
        self.password = password
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        var arguments = ["python3", Self.script.path, "--port", String(self.port), "--maildir", maildir.path]
        if let certificate { arguments += [implicitTLS ? "--implicit-tls" : "--starttls", certificate.path] }
        if loginOnly { arguments.append("--login-only") }
        if let user, let password { arguments += ["--user", user, "--password", password] }
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        var text = ""
        let deadline = Date().addingTimeInterval(20)
        while !text.contains("READY"), Date() < deadline {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        guard text.contains("READY") else {
            process.terminate()
            throw SMTPTestServerError.didNotStart(text)
        }
    }

    public enum SMTPTestServerError: Error { case didNotStart(String) }

    /// Stops the server: SIGTERM, then SIGKILL if it has not gone within 5 s.
    public func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    deinit { stop() }

    /// Raw messages received so far.
    public func messages() -> [String] {
        let new = maildir.appendingPathComponent("new")
        let files = (try? FileManager.default.contentsOfDirectory(at: new, includingPropertiesForKeys: nil)) ?? []
        return files.sorted { $0.lastPathComponent < $1.lastPathComponent }.compactMap { try? String(contentsOf: $0, encoding: .utf8) }
    }

    /// Waits (bounded) until `count` messages arrived.
    public func waitForMessages(_ count: Int, timeout: TimeInterval = 10) async throws -> [String] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let all = messages()
            if all.count >= count { return all }
            try await Task.sleep(for: .milliseconds(50))
        }
        return messages()
    }
}

/// Decodes the text/plain part of a MIME message written by Assent (base64 parts).
public func plainTextPart(of raw: String) -> String? {
    let normalized = raw.replacingOccurrences(of: "\r\n", with: "\n")
    guard let marker = normalized.range(of: "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n") else { return nil }
    let rest = normalized[marker.upperBound...]
    let encoded = rest.prefix { $0 != "-" }.replacingOccurrences(of: "\n", with: "")
    return Data(base64Encoded: encoded).map { String(decoding: $0, as: UTF8.self) }
}
