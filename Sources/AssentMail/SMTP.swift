import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL

// A small SMTP client (RFC 5321) with STARTTLS (RFC 3207), implicit TLS
// (RFC 8314) and AUTH PLAIN/LOGIN (RFC 4616). No maintained SMTP client
// exists in the package mirror, so Assent carries this one; it is tested
// against a real SMTP server process (aiosmtpd) in the test suite.

/// Where and how to reach the SMTP server, parsed from
/// `smtp://user:password@host:587?starttls=required|opportunistic|none&ca=/path/ca.pem`
/// or `smtps://user:password@host:465` (implicit TLS).
public struct SMTPConfiguration: Sendable, Equatable {
    public enum Security: String, Sendable {
        /// Plain connection upgraded with STARTTLS; refuse servers that do not offer it.
        case startTLSRequired = "required"
        /// STARTTLS when offered, else plain (for local relays only).
        case startTLSOpportunistic = "opportunistic"
        /// Never encrypt (local test servers only).
        case none
        /// TLS from the first byte (port 465).
        case implicitTLS = "implicit"
    }

    public var host: String
    public var port: Int
    public var security: Security
    public var username: String?
    public var password: String?
    /// PEM file of a CA to trust in addition to the system's (self-hosted relays).
    public var caFile: String?
    /// The name announced in EHLO.
    public var heloName: String
    public var timeout: TimeAmount = .seconds(30)

    public init(host: String, port: Int, security: Security, username: String? = nil, password: String? = nil, caFile: String? = nil,
                heloName: String = "localhost") {
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.caFile = caFile
        self.heloName = heloName
    }

    public init(url text: String) throws {
        guard let url = URLComponents(string: text), let scheme = url.scheme, ["smtp", "smtps"].contains(scheme) else {
            throw MailError.permanent("'\(text)' is not an smtp:// or smtps:// URL")
        }
        guard let host = url.host, !host.isEmpty else { throw MailError.permanent("the SMTP URL names no host") }
        let query = Dictionary((url.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { _, b in b })
        for key in query.keys where !["starttls", "ca", "helo"].contains(key) {
            throw MailError.permanent("unknown SMTP URL option '\(key)' (known: starttls, ca, helo)")
        }
        let security: Security
        if scheme == "smtps" {
            security = .implicitTLS
        } else {
            switch query["starttls"] ?? "required" {
            case "required": security = .startTLSRequired
            case "opportunistic": security = .startTLSOpportunistic
            case "none": security = .none
            case let other: throw MailError.permanent("starttls='\(other)' must be required, opportunistic or none")
            }
        }
        self.init(host: host, port: url.port ?? (scheme == "smtps" ? 465 : 587), security: security,
                  username: url.percentEncodedUser?.removingPercentEncoding, password: url.percentEncodedPassword?.removingPercentEncoding,
                  caFile: query["ca"], heloName: query["helo"] ?? "localhost")
        if let caFile, !FileManager.default.fileExists(atPath: caFile) {
            throw MailError.permanent("CA file \(caFile) does not exist")
        }
    }

    public static func == (a: SMTPConfiguration, b: SMTPConfiguration) -> Bool {
        a.host == b.host && a.port == b.port && a.security == b.security && a.username == b.username && a.password == b.password
            && a.caFile == b.caFile && a.heloName == b.heloName
    }
}

/// Sends each message over its own SMTP session.
public struct SMTPTransport: MailTransport {
    public let configuration: SMTPConfiguration
    let logger: Logger

    public init(configuration: SMTPConfiguration, logger: Logger = Logger(label: "assent.smtp")) {
        self.configuration = configuration
        self.logger = logger
    }

    public var summary: String {
        "SMTP \(configuration.host):\(configuration.port) (\(configuration.security.rawValue == "implicit" ? "implicit TLS" : "STARTTLS " + configuration.security.rawValue))"
    }

    public func send(_ message: MailMessage) async throws {
        let session: SMTPSession
        do {
            session = try await SMTPSession.connect(configuration, logger: logger)
        } catch MailError.permanent(let why) {
            // Trouble with the session (greeting, AUTH, STARTTLS) is the
            // server's or the configuration's, not this message's: retry,
            // rather than killing every queued email at once.
            throw MailError.transient(why)
        }
        do {
            try await session.deliver(message)
            await session.close()
        } catch {
            await session.close()
            throw error
        }
    }
}

struct SMTPReply: Sendable {
    var code: Int
    var lines: [String]
    var text: String { lines.joined(separator: " ") }
}

/// Collects reply lines and hands out complete (possibly multi-line) replies.
final class SMTPReplyHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var pending = ""
    private var current: [String] = []
    private var ready: [SMTPReply] = []
    private var waiters: [EventLoopPromise<SMTPReply>] = []
    private var failure: (any Error)?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        pending += buffer.readString(length: buffer.readableBytes) ?? ""
        while let range = pending.range(of: "\r\n") ?? pending.range(of: "\n") {
            let line = String(pending[..<range.lowerBound])
            pending.removeSubrange(..<range.upperBound)
            let code = Int(line.prefix(3)) ?? 0
            current.append(String(line.dropFirst(4)))
            if line.count < 4 || line[line.index(line.startIndex, offsetBy: 3)] != "-" {
                deliver(SMTPReply(code: code, lines: current))
                current = []
            }
        }
    }

    private func deliver(_ reply: SMTPReply) {
        if waiters.isEmpty { ready.append(reply) } else { waiters.removeFirst().succeed(reply) }
    }

    /// True when bytes or replies arrived that nobody asked for yet.
    var hasUnreadInput: Bool { !pending.isEmpty || !ready.isEmpty || !current.isEmpty }

    func next(on loop: any EventLoop) -> EventLoopFuture<SMTPReply> {
        if !ready.isEmpty { return loop.makeSucceededFuture(ready.removeFirst()) }
        if let failure { return loop.makeFailedFuture(failure) }
        let promise = loop.makePromise(of: SMTPReply.self)
        waiters.append(promise)
        return promise.futureResult
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(MailError.transient("the SMTP server closed the connection"))
        context.fireChannelInactive()
    }

    /// Fails whoever waits for a reply (the reply timer ran out).
    func timeOut() {
        let waiting = waiters
        waiters = []
        for waiter in waiting { waiter.fail(MailError.transient("the SMTP server did not answer in time")) }
    }

    private func fail(_ error: any Error) {
        failure = failure ?? error
        for waiter in waiters { waiter.fail(error) }
        waiters = []
    }
}

/// One SMTP conversation.
struct SMTPSession: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<SMTPReplyHandler>
    let configuration: SMTPConfiguration
    let logger: Logger

    static func connect(_ configuration: SMTPConfiguration, logger: Logger) async throws -> SMTPSession {
        let tls = try makeTLSContext(configuration)
        let host = configuration.host
        let implicit = configuration.security == .implicitTLS
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(.seconds(10))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if implicit {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: sniName(host)))
                        }
                        try channel.pipeline.syncOperations.addHandler(SMTPReplyHandler())
                    }
                }
                .connect(host: host, port: configuration.port).get()
        } catch {
            throw MailError.transient("cannot connect to SMTP server \(host):\(configuration.port): \(error)")
        }
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: SMTPReplyHandler.self), eventLoop: channel.eventLoop)
        }.get()
        let session = SMTPSession(channel: channel, handler: handler, configuration: configuration, logger: logger)
        do {
            try await session.start(tls: tls)
        } catch {
            await session.close()
            throw error
        }
        return session
    }

    /// SNI takes host names only, not IP literals.
    static func sniName(_ host: String) -> String? {
        host.allSatisfy { $0.isNumber || $0 == "." } || host.contains(":") ? nil : host
    }

    static func makeTLSContext(_ configuration: SMTPConfiguration) throws -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile = configuration.caFile {
            tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMFile(caFile))]
        }
        return try NIOSSLContext(configuration: tls)
    }

    private func start(tls: NIOSSLContext) async throws {
        _ = try await expect(reply(), 220, "greeting")
        var capabilities = try await expect(command("EHLO \(configuration.heloName)"), 250, "EHLO")
        let offersStartTLS = capabilities.lines.contains { $0.uppercased().hasPrefix("STARTTLS") }
        switch configuration.security {
        case .startTLSRequired, .startTLSOpportunistic:
            if offersStartTLS {
                _ = try await expect(command("STARTTLS"), 220, "STARTTLS")
                let host = configuration.host
                let handler = self.handler
                try await channel.eventLoop.submit { [channel] in
                    // Anything already buffered came before encryption and could
                    // be an injected answer to the EHLO below (RFC 3207 section 6).
                    guard !handler.value.hasUnreadInput else {
                        throw MailError.transient("the SMTP server sent data after agreeing to STARTTLS; refusing the session")
                    }
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: Self.sniName(host)),
                                                                   position: .first)
                }.get()
                capabilities = try await expect(command("EHLO \(configuration.heloName)"), 250, "EHLO after STARTTLS")
            } else if configuration.security == .startTLSRequired {
                throw MailError.permanent("the SMTP server does not offer STARTTLS, which is required (use ?starttls=opportunistic to allow plain text)")
            }
        case .none, .implicitTLS:
            break
        }
        if let username = configuration.username {
            try await authenticate(username: username, password: configuration.password ?? "", capabilities: capabilities)
        }
    }

    private func authenticate(username: String, password: String, capabilities: SMTPReply) async throws {
        let mechanisms = capabilities.lines.first { $0.uppercased().hasPrefix("AUTH") }?.uppercased().split(separator: " ").dropFirst() ?? []
        if mechanisms.contains("PLAIN") || mechanisms.isEmpty {
            let credentials = Data("\u{0}\(username)\u{0}\(password)".utf8).base64EncodedString()
            _ = try await expect(command("AUTH PLAIN \(credentials)", redacted: "AUTH PLAIN ***"), 235, "AUTH PLAIN")
        } else if mechanisms.contains("LOGIN") {
            _ = try await expect(command("AUTH LOGIN"), 334, "AUTH LOGIN")
            _ = try await expect(command(Data(username.utf8).base64EncodedString(), redacted: "***"), 334, "AUTH LOGIN user")
            _ = try await expect(command(Data(password.utf8).base64EncodedString(), redacted: "***"), 235, "AUTH LOGIN password")
        } else {
            throw MailError.permanent("the SMTP server offers no AUTH mechanism Assent knows (PLAIN, LOGIN): \(mechanisms.joined(separator: " "))")
        }
    }

    func deliver(_ message: MailMessage) async throws {
        let from = try await command("MAIL FROM:<\(message.from.address)>")
        guard from.code == 250 else { throw MailError.transient(classify(from, "MAIL FROM").description) }
        let rcpt = try await command("RCPT TO:<\(message.to.address)>")
        guard rcpt.code == 250 || rcpt.code == 251 else { throw classify(rcpt, "RCPT TO") }
        _ = try await expect(command("DATA"), 354, "DATA")
        // Dot-stuffing (RFC 5321 4.5.2), then the terminating "." line.
        var text = String(decoding: message.rendered(), as: UTF8.self)
        text = text.split(separator: "\r\n", omittingEmptySubsequences: false).map { $0.hasPrefix(".") ? "." + $0 : String($0) }.joined(separator: "\r\n")
        if !text.hasSuffix("\r\n") { text += "\r\n" }
        try await write(text + ".\r\n")
        _ = try await expect(reply(), 250, "end of DATA")
    }

    func close() async {
        _ = try? await command("QUIT")
        try? await channel.close()
    }

    private func write(_ text: String) async throws {
        try await channel.writeAndFlush(ByteBuffer(string: text))
    }

    private func command(_ line: String, redacted: String? = nil) async throws -> SMTPReply {
        logger.trace("SMTP > \(redacted ?? line)")
        try await write(line + "\r\n")
        return try await reply()
    }

    private func reply() async throws -> SMTPReply {
        let handler = self.handler
        let timeout = configuration.timeout
        let loop = channel.eventLoop
        let reply = try await loop.flatSubmit {
            let future = handler.value.next(on: loop)
            let timer = loop.scheduleTask(in: timeout) { handler.value.timeOut() }
            return future.always { _ in timer.cancel() }
        }.get()
        logger.trace("SMTP < \(reply.code) \(reply.text)")
        return reply
    }

    private func expect(_ reply: SMTPReply, _ code: Int, _ step: String) throws -> SMTPReply {
        guard reply.code == code else { throw classify(reply, step) }
        return reply
    }

    private func classify(_ reply: SMTPReply, _ step: String) -> MailError {
        let text = "SMTP \(step) answered \(reply.code) \(reply.text)"
        return (400..<500).contains(reply.code) || reply.code == 0 ? .transient(text) : .permanent(text)
    }
}
