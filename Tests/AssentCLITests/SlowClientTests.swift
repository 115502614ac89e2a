import AssentCore
import Foundation
import Testing

/// Slow clients against the real server: a request head or body that does not
/// arrive in time closes the connection, and other clients are served meanwhile.
@Suite struct SlowClientTests {
    /// A raw TCP connection to 127.0.0.1, to send exactly the bytes a slow client would.
    final class Connection {
        let fd: Int32

        init(port: Int) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard fd >= 0, connected == 0 else { throw CocoaError(.fileReadUnknown) }
            // Reads give up after 20 s, so a server that never closes fails the test rather than hanging it.
            var timeout = timeval(tv_sec: 20, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }

        deinit { close(fd) }

        func send(_ text: String) { _ = text.withCString { Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) } }

        /// Everything the server sends until it closes the connection; nil if it is still open after the read timeout.
        func readUntilClosed() -> String? {
            var received = Data()
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n == 0 { return String(decoding: received, as: UTF8.self) }
                if n < 0 { return errno == ECONNRESET ? String(decoding: received, as: UTF8.self) : nil }
                received.append(contentsOf: buffer[0..<n])
            }
        }
    }

    @Test func slowHeadsAndSlowBodiesAreCutOff() async throws {
        let cli = try CLI()
        let server = try ServerProcess(cli: cli, environment: ["ASSENT_HEADER_TIMEOUT_SECONDS": "1", "ASSENT_BODY_TIMEOUT_SECONDS": "1"])
        defer { server.stop() }
        let token = try #require(server.token)

        // Half a request head, then silence.
        let slowHead = try Connection(port: server.port)
        slowHead.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        // A complete head promising 100 bytes of body, then only 10 of them.
        let slowBody = try Connection(port: server.port)
        slowBody.send("POST /api/v1/contacts HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":")
        // Meanwhile others are served.
        #expect(try await server.get("/healthz").status == 200)

        let head = slowHead.readUntilClosed(), body = slowBody.readUntilClosed()
        #expect(head != nil && head?.contains("200") == false, "the slow head's connection was closed without an answer: \(head ?? "still open")")
        #expect(body != nil, "the slow body's connection was closed")
        // Nothing was written from the partial body; the server still works.
        let contacts = try await server.get("/api/v1/contacts", token: token)
        #expect(contacts.status == 200 && String(decoding: contacts.body, as: UTF8.self).contains("\"items\":[]"))
    }
}
