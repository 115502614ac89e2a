import AssentCore
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which addresses a webhook may reach. Endpoints that resolve to loopback,
/// link-local, private, shared (CGNAT), multicast or unspecified addresses
/// are refused unless the endpoint allows the private network (SSRF).
public enum WebhookAddressPolicy {
    /// The host's addresses (numeric text), from DNS or the literal itself.
    public static func resolve(_ host: String) -> [String] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return [] }
        defer { freeaddrinfo(first) }
        var addresses: [String] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !addresses.contains(text) { addresses.append(text) }
            }
            cursor = info.pointee.ai_next
        }
        return addresses
    }

    /// Whether a numeric address is on the public internet.
    public static func isPublic(_ address: String) -> Bool {
        let text = address.split(separator: "%").first.map(String.init) ?? address // drop an IPv6 zone
        if let v4 = ipv4(text) { return isPublicV4(v4) }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return false }
        let b = withUnsafeBytes(of: v6) { Array($0) }
        if b[0..<12].allSatisfy({ $0 == 0 }) { return false } // ::, ::1 and the deprecated ::a.b.c.d
        if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xFF && b[11] == 0xFF { return isPublicV4(Array(b[12..<16])) } // ::ffff:a.b.c.d
        if b[0] == 0xFE && b[1] & 0xC0 == 0xC0 { return false } // fec0::/10 site-local (deprecated)
        if b[0] == 0x20 && b[1] == 0x02 { return isPublicV4(Array(b[2..<6])) } // 2002::/16 6to4 wraps an IPv4 address
        if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B && b[4] == 0x00 && b[5] == 0x01 { return false } // 64:ff9b:1::/48 local NAT64
        if b[0] & 0xFE == 0xFC { return false } // fc00::/7 unique local
        if b[0] == 0xFE && b[1] & 0xC0 == 0x80 { return false } // fe80::/10 link-local
        if b[0] == 0xFF { return false } // multicast
        if b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0D && b[3] == 0xB8 { return false } // documentation
        if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B { return isPublicV4(Array(b[12..<16])) } // NAT64
        return true
    }

    static func ipv4(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        guard inet_pton(AF_INET, text, &v4) == 1 else { return nil }
        return withUnsafeBytes(of: v4) { Array($0) }
    }

    static func isPublicV4(_ b: [UInt8]) -> Bool {
        switch (b[0], b[1]) {
        case (0, _), (10, _), (127, _): false
        case (100, 64...127): false // shared address space (CGNAT)
        case (169, 254): false // link-local, cloud metadata
        case (172, 16...31), (192, 168): false
        case (192, 0) where b[2] == 0 || b[2] == 2: false // IETF, documentation
        case (198, 18...19): false // benchmarking
        case (198, 51) where b[2] == 100, (203, 0) where b[2] == 113: false // documentation
        case (224...255, _): false // multicast, reserved, broadcast
        default: true
        }
    }

    /// `resolve` on a Dispatch thread: getaddrinfo blocks, and Swift's
    /// concurrency threads (two on a small machine) must not wait on DNS.
    public static func resolveOffPool(_ host: String) async -> [String] {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: resolve(host)) }
        }
    }

    /// Why this URL may not be called now, or nil when it may. The addresses
    /// are checked here; the HTTP client resolves the name again when it
    /// connects, so a DNS answer that changes in between (rebinding) is not
    /// caught: on a hostile network, send webhooks through an egress proxy.
    public static func refusal(url: String, allowPrivateNetwork: Bool) async -> String? {
        guard let components = URLComponents(string: url), let host = components.host, !host.isEmpty else { return "'\(url.prefix(80))' has no host" }
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        let addresses = await resolveOffPool(bare)
        guard !addresses.isEmpty else { return "'\(bare)' does not resolve" }
        if !allowPrivateNetwork, let blocked = addresses.first(where: { !isPublic($0) }) {
            return "'\(bare)' resolves to \(blocked), a loopback, link-local or private address; an admin may allow the private network for this webhook"
        }
        return nil
    }
}

extension Ledger {
    /// Checks a webhook's fields; problems are named by field.
    func validateWebhook(url: String, description: String, events: [WebhookEventType], topics: [String], allowPrivateNetwork: Bool,
                         checkAddress: Bool = true) async throws {
        var problems: [ValidationError] = []
        let trimmed = url.trimmingCharacters(in: .whitespaces)
        if let components = URLComponents(string: trimmed), let scheme = components.scheme?.lowercased(), ["http", "https"].contains(scheme),
           let host = components.host, !host.isEmpty, components.user == nil, components.password == nil, trimmed.count <= Limits.urlLength {
            if checkAddress, let refusal = await WebhookAddressPolicy.refusal(url: trimmed, allowPrivateNetwork: allowPrivateNetwork) {
                problems.append(.init(field: "url", refusal))
            }
        } else {
            problems.append(.init(field: "url", "'\(trimmed.prefix(80))' must be an http or https URL with a host and no user name (at most \(Limits.urlLength) characters)"))
        }
        do { try TextCheck.check(description, field: "description", max: Limits.descriptionLength) } catch let DomainError.invalid(e) { problems += e }
        if events.isEmpty {
            problems.append(.init(field: "events", "name at least one of \(WebhookEventType.allCases.map(\.rawValue).joined(separator: ", "))"))
        }
        for (i, key) in topics.enumerated() {
            let known = (try? Topic.validateKey(key)) != nil ? try await store.topic(key: key) != nil : false
            if !known { problems.append(.init(field: "topics[\(i)]", "unknown topic '\(key.prefix(64))'")) }
        }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
    }

    /// Registers a webhook; the signing secret is returned once (only a sealed copy is stored).
    public func createWebhook(url: String, description: String = "", events: [WebhookEventType], topics: [String] = [], sources: [ConsentSource] = [],
                              allowPrivateNetwork: Bool = false, createdBy: String) async throws -> (endpoint: WebhookEndpoint, secret: String) {
        try await validateWebhook(url: url, description: description, events: events, topics: topics, allowPrivateNetwork: allowPrivateNetwork)
        let id = "wh_" + String(environment.newID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16))
        let secret = WebhookSignature.newSecret()
        let endpoint = WebhookEndpoint(id: id, url: url.trimmingCharacters(in: .whitespaces), description: description, events: events, topics: topics,
                                       sources: sources, allowPrivateNetwork: allowPrivateNetwork,
                                       sealedSecret: try masterKey.seal(Data(secret.utf8), context: Self.webhookSecretContext(id)),
                                       createdBy: createdBy, createdAt: now)
        try await store.insertWebhookEndpoint(endpoint)
        webhookCache.invalidate()
        return (endpoint, secret)
    }

    static func webhookSecretContext(_ id: String) -> UUID {
        // The sealed secret is bound to its endpoint id (a name-based UUID of it).
        var bytes = Array(Data(SHA256.hash(data: Data("webhook:\(id)".utf8))).prefix(16))
        bytes[6] = (bytes[6] & 0x0F) | 0x50
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        return UUID(uuid: (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                           bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
    }

    /// The endpoint's signing secret (for the worker).
    public func webhookSecret(_ endpoint: WebhookEndpoint) throws -> String {
        String(decoding: try masterKey.open(endpoint.sealedSecret, context: Self.webhookSecretContext(endpoint.id)), as: UTF8.self)
    }

    public func existingWebhook(_ id: String) async throws -> WebhookEndpoint {
        guard id.count <= 64, let endpoint = try await store.webhookEndpoint(id: id) else { throw DomainError.notFound(what: "webhook", id: String(id.prefix(64))) }
        return endpoint
    }

    /// Changes a webhook (URL, filters, enabled, private network); its deliveries stay.
    public func updateWebhook(id: String, _ edit: (inout WebhookEndpoint) -> Void) async throws -> WebhookEndpoint {
        let original = try await existingWebhook(id)
        var endpoint = original
        edit(&endpoint)
        endpoint.id = id
        endpoint.updatedAt = now
        // The address is looked up again only when it may have become unsafe: disabling an
        // endpoint whose host stopped resolving must still work.
        let addressChanged = endpoint.url != original.url || (endpoint.allowPrivateNetwork != original.allowPrivateNetwork && !endpoint.allowPrivateNetwork)
        try await validateWebhook(url: endpoint.url, description: endpoint.description, events: endpoint.events, topics: endpoint.topics,
                                  allowPrivateNetwork: endpoint.allowPrivateNetwork, checkAddress: addressChanged)
        try await store.updateWebhookEndpoint(endpoint)
        webhookCache.invalidate()
        return endpoint
    }

    /// Replaces the signing secret; returns the new one (shown once).
    public func rotateWebhookSecret(id: String) async throws -> String {
        let secret = WebhookSignature.newSecret()
        let sealed = try masterKey.seal(Data(secret.utf8), context: Self.webhookSecretContext(id))
        _ = try await updateWebhook(id: id) { $0.sealedSecret = sealed }
        return secret
    }

    /// Deletes a webhook with its delivery log.
    public func deleteWebhook(id: String) async throws {
        _ = try await existingWebhook(id)
        _ = try await store.deleteWebhookEndpoint(id: id)
        webhookCache.invalidate()
    }

    /// Sends again everything an endpoint was sent (or was to be sent) since
    /// a moment, as new deliveries in the original order. Returns how many.
    public func replayWebhooks(endpointID: String, since: Date, limit: Int = 100_000) async throws -> Int {
        _ = try await existingWebhook(endpointID)
        let at = now
        let originals = try await store.webhookDeliveries(WebhookDeliveryQuery(endpointID: endpointID, since: since, limit: limit)).reversed()
        let copies = originals.map {
            WebhookDelivery(id: environment.newID(), endpointID: endpointID, eventType: $0.eventType, contactID: $0.contactID, payload: $0.payload,
                            nextAttemptAt: at, createdAt: at)
        }
        for chunk in stride(from: 0, to: copies.count, by: 500).map({ Array(copies[$0..<min($0 + 500, copies.count)]) }) {
            try await store.insertWebhookDeliveries(chunk)
        }
        return copies.count
    }
}
