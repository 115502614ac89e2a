import Foundation

/// `scripts/webhook-receiver.py` as a child process: a real HTTP receiver that
/// checks every webhook's signature with the Standard Webhooks reference
/// library (Python, independent of Assent's code) and logs what arrived.
public final class WebhookReceiver: @unchecked Sendable {
    public let port: Int
    public let log: URL
    private var process: Process?
    private let status: Int?

    /// One received request.
    public struct Received: Sendable {
        public var id: String
        public var verified: Bool
        public var error: String?
        /// The verified JSON body (`type`, `timestamp`, `data`).
        public var body: [String: any Sendable]?
    }

    /// Picks a port and a log file; `start()` makes it listen (tests start it late to play an outage).
    public init(port: Int? = nil, status: Int? = nil, directory: URL? = nil) throws {
        self.port = try port ?? freeLocalPort()
        self.status = status
        log = try (directory ?? TestDirectory.make()).appendingPathComponent("webhooks-\(self.port).jsonl")
    }

    public static var script: URL {
        SMTPTestServer.script.deletingLastPathComponent().appendingPathComponent("webhook-receiver.py")
    }

    public var url: String { "http://127.0.0.1:\(port)/hooks" }

    /// Listens, verifying with this signing secret.
    public func start(secret: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.script.path, "--port", String(port), "--secret", secret, "--out", log.path]
            + (status.map { ["--status", String($0)] } ?? [])
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
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
            throw SMTPTestServer.SMTPTestServerError.didNotStart(text + String(decoding: err.fileHandleForReading.availableData, as: UTF8.self))
        }
        self.process = process
    }

    public func stop() {
        guard let process, process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    deinit { stop() }

    public func received() -> [Received] {
        guard let text = try? String(contentsOf: log, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            return Received(id: object["id"] as? String ?? "", verified: object["verified"] as? Bool ?? false, error: object["error"] as? String,
                            body: (object["body"] as? [String: Any]).map(Self.sendable))
        }
    }

    static func sendable(_ object: [String: Any]) -> [String: any Sendable] {
        object.mapValues { value -> any Sendable in
            switch value {
            case let nested as [String: Any]: return sendable(nested)
            case let text as String: return text
            case let number as NSNumber: return number.doubleValue
            default: return String(describing: value)
            }
        }
    }

    /// Waits (bounded) until at least `count` verified distinct messages arrived.
    public func waitForVerified(_ count: Int, timeout: TimeInterval = 30, poll: (() async throws -> Void)? = nil) async throws -> [Received] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let verified = received().filter(\.verified)
            if Set(verified.map(\.id)).count >= count { return verified }
            try await poll?()
            try await Task.sleep(for: .milliseconds(50))
        }
        return received().filter(\.verified)
    }
}
