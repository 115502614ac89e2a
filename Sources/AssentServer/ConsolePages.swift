import AssentCore
import AssentStore
import Foundation
import HTTPTypes
import Hummingbird

/// One page or action of the staff console and who may use it. The table is
/// the single list of console routes: it registers them, and the
/// authorisation matrix test walks it for every role.
struct ConsoleRoute: Sendable {
    var method: HTTPRequest.Method
    var path: String
    /// nil: no sign-in needed (the sign-in page itself).
    var roles: Set<StaffUser.Role>?
    /// A file upload (multipart/form-data): the handler reads the body and checks the CSRF token itself.
    var upload = false
    var handler: @Sendable (Request, AssentRequestContext, ConsoleVisit?) async throws -> Response
}

/// A signed-in request: who, their session, and (for posts) the checked form.
struct ConsoleVisit: Sendable {
    var user: StaffUser
    var secret: String
    var csrf: String
    var form: FormBody
}

extension FormBody: @unchecked Sendable {}

/// The staff console (`/console`): sign-in with roles, contact search, the
/// contact record with its timeline, recording verbal instructions, topic,
/// form, API key and user management, the audit log and `verify`.
/// Server-rendered, no JavaScript, keyboard-usable.
struct ConsolePages: Sendable {
    let ledger: Ledger
    let pages: Pages
    let signInLimiter: RateLimiter
    static let cookieName = "assent_console"
    static let maxBody = 64 * 1024

    static let everyone: Set<StaffUser.Role> = [.admin, .agent, .auditor]
    static let recorders: Set<StaffUser.Role> = [.admin, .agent]
    static let readers: Set<StaffUser.Role> = [.admin, .auditor]
    static let admins: Set<StaffUser.Role> = [.admin]

    var routes: [ConsoleRoute] {
        [
            ConsoleRoute(method: .get, path: "/console/signin", roles: nil) { r, _, _ in signInPage(r) },
            ConsoleRoute(method: .post, path: "/console/signin", roles: nil) { r, c, _ in try await signIn(r, c) },
            ConsoleRoute(method: .post, path: "/console/signout", roles: Self.everyone) { _, c, v in try await signOut(c, v!) },
            ConsoleRoute(method: .get, path: "/console/password", roles: Self.everyone) { _, _, v in passwordPage(v!) },
            ConsoleRoute(method: .post, path: "/console/password", roles: Self.everyone) { _, c, v in try await changePassword(c, v!) },
            ConsoleRoute(method: .get, path: "/console", roles: Self.everyone) { r, _, v in try await search(r, v!) },
            ConsoleRoute(method: .post, path: "/console/contacts", roles: Self.recorders) { r, c, v in try await createContact(r, c, v!) },
            ConsoleRoute(method: .get, path: "/console/contacts/{id}", roles: Self.everyone) { r, c, v in try await contact(r, c, v!, evidence: false) },
            ConsoleRoute(method: .get, path: "/console/contacts/{id}/evidence", roles: Self.readers) { r, c, v in try await contact(r, c, v!, evidence: true) },
            ConsoleRoute(method: .get, path: "/console/contacts/{id}/export", roles: Self.readers) { _, c, v in try await export(c, v!) },
            ConsoleRoute(method: .get, path: "/console/contacts/{id}/export.html", roles: Self.readers) { _, c, v in try await export(c, v!, html: true) },
            ConsoleRoute(method: .post, path: "/console/contacts/{id}", roles: Self.recorders) { r, c, v in try await rectify(r, c, v!) },
            ConsoleRoute(method: .post, path: "/console/contacts/{id}/erase", roles: Self.admins) { r, c, v in try await erase(r, c, v!) },
            ConsoleRoute(method: .post, path: "/console/contacts/{id}/object", roles: Self.recorders) { r, c, v in try await object(r, c, v!) },
            ConsoleRoute(method: .get, path: "/console/contacts/{id}/record", roles: Self.recorders) { _, c, v in try await recordPage(c, v!) },
            ConsoleRoute(method: .post, path: "/console/contacts/{id}/record", roles: Self.recorders) { r, c, v in try await record(r, c, v!) },
            ConsoleRoute(method: .get, path: "/console/requests", roles: Self.everyone) { _, _, v in try await requests(v!) },
            ConsoleRoute(method: .post, path: "/console/requests", roles: Self.recorders) { _, c, v in try await recordRequest(c, v!) },
            ConsoleRoute(method: .post, path: "/console/requests/{id}/extend", roles: Self.admins) { _, c, v in try await extendRequest(c, v!) },
            ConsoleRoute(method: .post, path: "/console/requests/{id}/complete", roles: Self.admins) { _, c, v in try await completeRequest(c, v!) },
            ConsoleRoute(method: .get, path: "/console/notices/{key}/{version}", roles: Self.everyone) { _, c, v in try await notice(c, v!) },
            ConsoleRoute(method: .get, path: "/console/topics", roles: Self.everyone) { _, _, v in try await topics(v!) },
            ConsoleRoute(method: .post, path: "/console/topics", roles: Self.admins) { _, c, v in try await createTopic(c, v!) },
            ConsoleRoute(method: .get, path: "/console/topics/{key}", roles: Self.everyone) { _, c, v in try await topic(c, v!) },
            ConsoleRoute(method: .post, path: "/console/topics/{key}", roles: Self.admins) { _, c, v in try await editTopic(c, v!) },
            ConsoleRoute(method: .post, path: "/console/topics/{key}/notices", roles: Self.admins) { _, c, v in try await publishNotice(c, v!) },
            ConsoleRoute(method: .post, path: "/console/topics/{key}/retire", roles: Self.admins) { _, c, v in try await retireTopic(c, v!) },
            ConsoleRoute(method: .get, path: "/console/forms", roles: Self.everyone) { _, _, v in try await forms(v!) },
            ConsoleRoute(method: .post, path: "/console/forms", roles: Self.admins) { _, c, v in try await createForm(c, v!) },
            ConsoleRoute(method: .get, path: "/console/forms/{id}", roles: Self.everyone) { _, c, v in try await form(c, v!) },
            ConsoleRoute(method: .post, path: "/console/forms/{id}", roles: Self.admins) { _, c, v in try await editForm(c, v!) },
            ConsoleRoute(method: .post, path: "/console/forms/{id}/retire", roles: Self.admins) { _, c, v in try await retireForm(c, v!) },
            ConsoleRoute(method: .get, path: "/console/keys", roles: Self.readers) { _, _, v in try await keys(v!) },
            ConsoleRoute(method: .post, path: "/console/keys", roles: Self.admins) { _, c, v in try await createKey(c, v!) },
            ConsoleRoute(method: .post, path: "/console/keys/{id}/revoke", roles: Self.admins) { _, c, v in try await revokeKey(c, v!) },
            ConsoleRoute(method: .get, path: "/console/users", roles: Self.readers) { _, _, v in try await users(v!) },
            ConsoleRoute(method: .post, path: "/console/users", roles: Self.admins) { _, c, v in try await createUser(c, v!) },
            ConsoleRoute(method: .post, path: "/console/users/{id}/disable", roles: Self.admins) { _, c, v in try await disableUser(c, v!) },
            ConsoleRoute(method: .post, path: "/console/users/{id}/reset", roles: Self.admins) { _, c, v in try await resetUser(c, v!) },
            ConsoleRoute(method: .get, path: "/console/audit", roles: Self.readers) { r, _, v in try await auditLog(r, v!) },
            ConsoleRoute(method: .get, path: "/console/verify", roles: Self.readers) { _, _, v in verifyPage(v!, report: nil) },
            ConsoleRoute(method: .post, path: "/console/verify", roles: Self.readers) { _, c, v in try await verify(c, v!) },
        ] + segmentRoutes + webhookRoutes + reportRoutes + importRoutes
    }

    // MARK: Dispatch

    /// Sign-in, role, origin and CSRF checks around every route, in that
    /// order: a role that may not use a route gets 403 before anything is read.
    func handle(_ route: ConsoleRoute, _ request: Request, _ context: AssentRequestContext) async -> Response {
        var request = request
        do {
            guard let roles = route.roles else { return try await route.handler(request, context, nil) }
            guard let (user, secret) = try await visitor(request) else {
                return redirect("/console/signin")
            }
            if user.mustChangePassword && !route.path.hasPrefix("/console/password") && route.path != "/console/signout" {
                return redirect("/console/password")
            }
            guard roles.contains(user.role) else {
                return message(.forbidden, title: "Not allowed", paragraphs: ["Your role (\(user.role.rawValue)) cannot use this page."],
                               visit: ConsoleVisit(user: user, secret: secret, csrf: ledger.staffCSRFToken(sessionSecret: secret), form: FormBody("")))
            }
            let csrf = ledger.staffCSRFToken(sessionSecret: secret)
            var form = FormBody("")
            if route.method == .post {
                let sameOrigin = request.headers[.origin].map { $0.lowercased() == pages.site.origin } ?? true
                // An upload's token is inside its multipart body: its handler checks it before acting.
                if !route.upload { form = FormBody(try await request.collectText(upTo: Self.maxBody)) }
                guard sameOrigin, route.upload || ledger.checkStaffCSRF(form.value("csrf"), sessionSecret: secret) else {
                    return message(.forbidden, title: "This form has expired", paragraphs: ["Go back, reload the page and try again."],
                                   visit: ConsoleVisit(user: user, secret: secret, csrf: csrf, form: FormBody("")))
                }
            }
            return try await route.handler(request, context, ConsoleVisit(user: user, secret: secret, csrf: csrf, form: form))
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            return pages.message(.contentTooLarge, language: "en", title: "Too much data", paragraphs: ["The form sent more than 64 KB."])
        } catch {
            let status = APIError.from(error)?.status ?? .internalServerError
            if status == .internalServerError { context.logger.error("console page failed: \(String(reflecting: error))") }
            let text = status == .internalServerError ? "Something went wrong; the server log has the details." : (APIError.from(error)?.detail ?? "")
            return pages.message(status, language: "en", title: status == .notFound ? "Not found" : "Something went wrong", paragraphs: [text])
        }
    }

    private func visitor(_ request: Request) async throws -> (StaffUser, String)? {
        guard let secret = PortalPages.cookieValue(request.headers[values: .cookie], name: Self.cookieName),
              let user = try await ledger.staffSession(secret: secret) else { return nil }
        return (user, secret)
    }

    // MARK: Rendering

    func render(_ template: String, title: String, visit: ConsoleVisit?, nav: String? = nil, status: HTTPResponse.Status = .ok,
                model: [String: Any] = [:], flash: String? = nil, errors: [String] = []) -> Response {
        var model = model
        model["title"] = title
        if let visit {
            model["user"] = ["name": visit.user.name, "email": visit.user.email.value, "role": visit.user.role.rawValue]
            model["csrf"] = visit.csrf
            model["canSeeAdmin"] = Self.readers.contains(visit.user.role)
            model["isAdmin"] = visit.user.role == .admin
        }
        if let nav { model["nav" + nav] = true }
        if let flash { model["flash"] = flash }
        model["hasErrors"] = !errors.isEmpty
        model["errors"] = errors
        return pages.render(template, language: "en", status: status, model: model, headers: PageHeaders.html())
    }

    func message(_ status: HTTPResponse.Status, title: String, paragraphs: [String], visit: ConsoleVisit?, secret: (label: String, value: String)? = nil,
                 back: (href: String, text: String)? = nil) -> Response {
        var model: [String: Any] = ["paragraphs": paragraphs]
        if let secret { model["secret"] = secret.value; model["secretLabel"] = secret.label }
        if let back { model["back"] = ["href": back.href, "text": back.text] }
        return render("console-message", title: title, visit: visit, status: status, model: model)
    }

    func redirect(_ location: String, cookie: String? = nil) -> Response {
        var headers = PageHeaders.html()
        headers[.location] = location
        if let cookie { headers[.setCookie] = cookie }
        return Response(status: .seeOther, headers: headers)
    }

    private func cookie(_ value: String, maxAge: Int) -> String {
        var cookie = "\(Self.cookieName)=\(value); Path=/console; Max-Age=\(maxAge); HttpOnly; SameSite=Strict"
        if pages.site.baseURL.lowercased().hasPrefix("https://") { cookie += "; Secure" }
        return cookie
    }

    var zone: TimeZone { pages.site.consoleTimeZone }

    /// A time as staff read it, in the console's time zone.
    func time(_ date: Date?) -> String {
        guard let date else { return "" }
        return date.formatted(Date.FormatStyle(date: .abbreviated, time: .shortened, locale: Locale(identifier: "en_GB"), timeZone: zone))
            + " " + (zone.identifier == "UTC" || zone.identifier == "GMT" ? "UTC" : zone.abbreviation(for: date) ?? zone.identifier)
    }

    static func iso(_ date: Date) -> String { PortalPages.iso(date) }

    // MARK: Signing in and out

    func signInPage(_ request: Request, email: String = "", errors: [String] = [], status: HTTPResponse.Status = .ok) -> Response {
        render("console-signin", title: "Sign in", visit: nil, status: status, model: ["email": email], errors: errors)
    }

    func signIn(_ request: Request, _ context: AssentRequestContext) async throws -> Response {
        var request = request
        let admitted = await signInLimiter.admit(context.remoteIP ?? "unknown")
        guard admitted.allowed else {
            var response = signInPage(request, errors: ["Too many attempts from your address. Wait \(admitted.retryAfter) seconds."], status: .tooManyRequests)
            response.headers[.retryAfter] = String(admitted.retryAfter)
            return response
        }
        if let origin = request.headers[.origin], origin.lowercased() != pages.site.origin {
            return signInPage(request, errors: ["Sign in from this server's own page."], status: .forbidden)
        }
        let form = FormBody(try await request.collectText(upTo: 16 * 1024))
        let email = form.value("email") ?? ""
        switch try await ledger.signInStaff(email: email, password: form.value("password") ?? "", ipAddress: context.remoteIP) {
        case .signedIn(let secret, let user):
            return redirect(user.mustChangePassword ? "/console/password" : "/console", cookie: cookie(secret, maxAge: Int(Ledger.staffSessionLifetime)))
        case .refused, .locked:
            // One answer for both: it must not confirm that an account exists.
            return signInPage(request, email: email, errors: [
                "The email or password is not right, or the account is locked for 15 minutes after too many wrong passwords.",
            ], status: .unauthorized)
        }
    }

    func signOut(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        try await ledger.signOutStaff(secret: visit.secret, user: visit.user, ipAddress: context.remoteIP)
        return redirect("/console/signin", cookie: cookie("", maxAge: 0))
    }

    func passwordPage(_ visit: ConsoleVisit, errors: [String] = [], status: HTTPResponse.Status = .ok) -> Response {
        render("console-password", title: "Change your password", visit: visit, status: status, model: ["mustChange": visit.user.mustChangePassword],
               errors: errors)
    }

    func changePassword(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        do {
            let secret = try await ledger.changeStaffPassword(visit.user, current: visit.form.value("current") ?? "", new: visit.form.value("new") ?? "",
                                                              ipAddress: context.remoteIP)
            return redirect("/console", cookie: cookie(secret, maxAge: Int(Ledger.staffSessionLifetime)))
        } catch DomainError.invalid(let errors) {
            return passwordPage(visit, errors: errors.map(\.description), status: .unprocessableContent)
        }
    }

    // MARK: Contacts

    func search(_ request: Request, _ visit: ConsoleVisit, values: FormBody? = nil, errors: [String] = [],
                status: HTTPResponse.Status = .ok) async throws -> Response {
        var query = (request.uri.queryParameters.get("q") ?? "").trimmingCharacters(in: .whitespaces)
        // Control characters (NUL included) match nothing and never reach the database.
        if (try? TextCheck.check(query, field: "q", max: 200)) == nil { query = String(query.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F }.prefix(200)) }
        var model: [String: Any] = ["query": query, "searched": !query.isEmpty, "canCreate": Self.recorders.contains(visit.user.role),
                                    "new": ["email": values?.value("email") ?? "", "name": values?.value("name") ?? "",
                                            "externalId": values?.value("externalId") ?? "", "locale": values?.value("locale") ?? ""]]
        if !query.isEmpty {
            var found = try await ledger.store.searchContacts(String(query.prefix(200)), limit: 50)
            if let id = UUID(uuidString: query), let byID = try await ledger.store.contact(id: id) { found.insert(byID, at: 0) }
            model["results"] = found.map { ["id": $0.id.uuidString.lowercased(), "email": $0.email.value, "name": $0.name ?? "",
                                            "externalId": $0.externalID ?? "", "created": time($0.createdAt)] }
            model["hasResults"] = !found.isEmpty
        }
        return render("console-search", title: "Contacts", visit: visit, nav: "Contacts", status: status, model: model, errors: errors)
    }

    /// A person who phones in may not be known yet: agents add them here
    /// (every topic reads No until an instruction is recorded).
    func createContact(_ request: Request, _ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let f = visit.form
        func optional(_ name: String) -> String? { f.value(name).flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0.trimmingCharacters(in: .whitespaces) } }
        do {
            let email = try EmailAddress(f.value("email") ?? "")
            let contact = try await ledger.createContact(email: email, name: optional("name"), externalID: optional("externalId"), locale: optional("locale"))
            try await ledger.audit(visit.user, "contact_create", target: "contact:\(contact.id.uuidString.lowercased())", ipAddress: context.remoteIP)
            return redirect("/console/contacts/\(contact.id.uuidString.lowercased())")
        } catch DomainError.invalid(let errors) {
            return try await search(request, visit, values: f, errors: errors.map(\.description), status: .unprocessableContent)
        } catch DomainError.conflict(_, let message) {
            return try await search(request, visit, values: f, errors: [message], status: .conflict)
        }
    }

    func contactID(_ context: AssentRequestContext) throws -> UUID {
        let text = try context.parameters.require("id")
        guard let id = UUID(uuidString: text) else { throw DomainError.notFound(what: "contact", id: String(text.prefix(64))) }
        return id
    }

    /// The contact record: details, the preferences grid and the timeline.
    /// Evidence is opened only on its own route, for roles allowed to read it,
    /// and each opening is written to the audit log.
    func contact(_ request: Request, _ context: AssentRequestContext, _ visit: ConsoleVisit, evidence: Bool, flash: String? = nil) async throws -> Response {
        let contact = try await ledger.existingContact(contactID(context))
        let before = request.uri.queryParameters.get("before").flatMap { Int64($0) }
        if evidence {
            try await ledger.audit(visit.user, "view_evidence", target: "contact:\(contact.id.uuidString.lowercased())", ipAddress: context.remoteIP)
        }
        let at = ledger.environment.now()
        let topics = try await ledger.store.topics(includeRetired: true)
        let preferences = Dictionary(try await ledger.store.preferences(contactID: contact.id).map { ($0.topicKey, $0) }, uniquingKeysWith: { a, _ in a })
        let grid: [[String: Any]] = topics.filter { $0.isActive || preferences[$0.key] != nil }.map { topic in
            let p = preferences[topic.key]
            return ["key": topic.key, "title": topic.title + (topic.isActive ? "" : " (retired)"),
                    "yes": topic.isActive && (p?.allowsSending(at: at) ?? false), "state": p?.effectiveState(at: at).rawValue ?? "none",
                    "since": time(p?.since), "expires": time(p?.expiresAt)]
        }
        let titles = Dictionary(topics.map { ($0.key, $0.title) }, uniquingKeysWith: { a, _ in a })
        let staffNames = Dictionary(try await ledger.store.staffUsers().map { ($0.id.uuidString.lowercased(), $0.email.value) }, uniquingKeysWith: { a, _ in a })
        let page = 100
        let entries = try await ledger.timeline(contactID: contact.id, beforeSeq: before, limit: page + 1)
        let timeline: [[String: Any]] = entries.prefix(page).map { entry in
            let e = entry.event
            let (badge, badgeClass) = Self.badge(e.source, e.channel)
            var row: [String: Any] = [
                "seq": e.seq, "iso": Self.iso(e.occurredAt), "when": time(e.occurredAt), "recorded": time(e.recordedAt),
                "late": e.recordedAt.timeIntervalSince(e.occurredAt) > 60, "topic": titles[e.topicKey] ?? e.topicKey, "topicKey": e.topicKey,
                "from": Self.yesNo(e.fromState), "to": Self.yesNo(e.toState) + " (\(e.action.rawValue))", "badge": badge, "badgeClass": badgeClass,
                "actor": Self.actor(e.actor, staffNames), "noticeVersion": e.noticeVersion ?? false,
                "form": e.formID.map { "\($0) v\(e.formVersion ?? 0)" } ?? false,
            ]
            if evidence {
                row["note"] = entry.personal?.note ?? false
                row["ip"] = entry.personal?.ipAddress ?? false
                row["agent"] = entry.personal?.userAgent ?? false
                row["shredded"] = entry.evidenceShredded
            }
            return row
        }
        var model: [String: Any] = [
            "contact": ["id": contact.id.uuidString.lowercased(), "email": contact.email.value, "name": contact.name ?? "",
                        "externalId": contact.externalID ?? "", "locale": contact.locale ?? "", "created": time(contact.createdAt)],
            "grid": grid, "timeline": timeline, "hasTimeline": !timeline.isEmpty, "showEvidence": evidence,
            "canRecord": Self.recorders.contains(visit.user.role) && !contact.isErased, "canSeeEvidence": Self.readers.contains(visit.user.role),
            "canErase": visit.user.role == .admin && !contact.isErased, "erased": contact.erasedAt.map { time($0) as Any } ?? false,
            "objected": contact.objectedAt.map { time($0) as Any } ?? false,
            "channels": Self.channels.map { ["value": $0.0.rawValue, "label": $0.1] },
        ]
        if entries.count > page, let last = entries.prefix(page).last {
            model["older"] = "/console/contacts/\(contact.id.uuidString.lowercased())\(evidence ? "/evidence" : "")?before=\(last.event.seq)"
        }
        return render("console-contact", title: contact.name.map { "\($0) <\(contact.email.value)>" } ?? contact.email.value, visit: visit,
                      nav: "Contacts", model: model, flash: flash ?? request.uri.queryParameters.get("recorded").map { "Recorded \($0) change(s)." })
    }

    /// Corrects a person's details (GDPR Art. 16), audited with what changed.
    func rectify(_ request: Request, _ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let id = try contactID(context)
        let f = visit.form
        func optional(_ name: String) -> String? { f.value(name).flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0.trimmingCharacters(in: .whitespaces) } }
        let before = try await ledger.existingContact(id)
        if before.isErased { throw DomainError.gone(what: "contact", id: id.uuidString.lowercased()) }
        do {
            let email = try EmailAddress(f.value("email") ?? "")
            let after = try await ledger.updateContact(id: id) { c in
                c.email = email
                c.name = optional("name")
                c.externalID = optional("externalId")
                c.locale = optional("locale")
            }
            let changed = [("email", before.email.value, after.email.value), ("name", before.name ?? "", after.name ?? ""),
                           ("external id", before.externalID ?? "", after.externalID ?? ""), ("language", before.locale ?? "", after.locale ?? "")]
                .filter { $0.1 != $0.2 }.map(\.0)
            if !changed.isEmpty {
                try await ledger.audit(visit.user, "contact_rectify", target: "contact:\(id.uuidString.lowercased())",
                                       detail: "changed " + changed.joined(separator: ", "), ipAddress: context.remoteIP)
            }
            return try await contact(request, context, visit, evidence: false, flash: changed.isEmpty ? "Nothing changed." : "Saved: " + changed.joined(separator: ", ") + ".")
        } catch DomainError.invalid(let errors) {
            return try await contact(request, context, visit, evidence: false, flash: "Nothing was saved: " + errors.map(\.description).joined(separator: "; "))
        } catch DomainError.conflict(_, let message) {
            return try await contact(request, context, visit, evidence: false, flash: "Nothing was saved: " + message)
        }
    }

    /// Erases the person (admins), with the reason kept in the audit log and the suppression list.
    func erase(_ request: Request, _ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let id = try contactID(context)
        guard visit.form.value("confirm") == "yes" else {
            return try await contact(request, context, visit, evidence: false, flash: "Nothing was erased: tick the box to confirm.")
        }
        do {
            _ = try await ledger.eraseContact(id, reason: visit.form.value("reason") ?? "", erasedBy: visit.user.email.value, actor: visit.user,
                                              ipAddress: context.remoteIP)
            return redirect("/console/contacts/\(id.uuidString.lowercased())")
        } catch DomainError.invalid(let errors) {
            return try await contact(request, context, visit, evidence: false, flash: "Nothing was erased: " + errors.map(\.description).joined(separator: "; "))
        }
    }

    /// Records an objection to all direct marketing that the person made to staff.
    func object(_ request: Request, _ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let id = try contactID(context)
        guard let channel = visit.form.value("channel").flatMap(StaffChannel.init(rawValue:)) else {
            return try await contact(request, context, visit, evidence: false, flash: "Nothing was recorded: choose how the person told you.")
        }
        do {
            let result = try await ledger.objectToMarketing(id, source: .staff, channel: channel, actor: .staff(visit.user.id.uuidString.lowercased()),
                                                            evidence: Evidence(personal: PersonalEvidence(note: visit.form.value("note"))))
            try await ledger.audit(visit.user, "record_objection", target: "contact:\(id.uuidString.lowercased())",
                                   detail: "\(channel.rawValue): withdrew \(result.events.count)", ipAddress: context.remoteIP)
            return redirect("/console/contacts/\(id.uuidString.lowercased())?recorded=\(result.events.count)")
        } catch DomainError.invalid(let errors) {
            return try await contact(request, context, visit, evidence: false, flash: "Nothing was recorded: " + errors.map(Self.humanise).joined(separator: "; "))
        }
    }

    static func yesNo(_ state: PreferenceState) -> String {
        switch state {
        case .granted: "Yes"
        case .pending: "Pending"
        case .none: "No"
        case .withdrawn: "No"
        case .expired: "No (expired)"
        }
    }

    /// The source badge, as the seed's "GDPR Activity" grid names it.
    static func badge(_ source: ConsentSource, _ channel: StaffChannel?) -> (String, String) {
        switch source {
        case .form: ("Form", "form")
        case .preferenceCentre: ("Preference centre", "centre")
        case .portal: ("Portal", "portal")
        case .staff:
            switch channel {
            case .phone, nil: ("Verbal/phone", "verbal")
            case .inPerson: ("Verbal/in person", "verbal")
            case .letter: ("Letter", "verbal")
            case .email: ("Email to staff", "verbal")
            }
        case .api: ("API", "api")
        case .import: ("Import", "import")
        case .emailLink: ("Email link", "link")
        case .oneClickUnsubscribe: ("Unsubscribe link", "unsubscribe")
        case .system: ("System", "system")
        }
    }

    static func actor(_ actor: Actor, _ staff: [String: String]) -> String {
        switch actor.kind {
        case .staff: staff[actor.id ?? ""] ?? "staff \(actor.id ?? "")"
        case .apiKey: "API key \(actor.id ?? "")"
        case .subject: "the person"
        case .system: "Assent"
        }
    }

    func export(_ context: AssentRequestContext, _ visit: ConsoleVisit, html: Bool = false) async throws -> Response {
        let id = try contactID(context)
        let export = try await ledger.exportPersonalData(contactID: id)
        try await ledger.audit(visit.user, "export_contact", target: "contact:\(id.uuidString.lowercased())", detail: html ? "printable" : "JSON",
                               ipAddress: context.remoteIP)
        if html { return Response(status: .ok, headers: PageHeaders.html(), body: .init(byteBuffer: ByteBuffer(string: pages.exportHTML(export)))) }
        let data = try JSONCoding.encoder.encode(export)
        var headers = PageHeaders.html()
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.contentDisposition] = "attachment; filename=\"contact-\(id.uuidString.lowercased()).json\""
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    // MARK: Recording an instruction

    static let channels: [(StaffChannel, String)] = [(.phone, "Phone"), (.inPerson, "In person"), (.letter, "Letter"), (.email, "Email")]

    func recordPage(_ context: AssentRequestContext, _ visit: ConsoleVisit, values: FormBody? = nil, errors: [String] = [],
                    status: HTTPResponse.Status = .ok) async throws -> Response {
        let contact = try await ledger.existingContact(contactID(context))
        let at = ledger.environment.now()
        let preferences = Dictionary(try await ledger.store.preferences(contactID: contact.id).map { ($0.topicKey, $0) }, uniquingKeysWith: { a, _ in a })
        var topics: [[String: Any]] = []
        for topic in try await ledger.store.topics(includeRetired: false) {
            let chosen = values?.value("change-\(topic.key)") ?? ""
            let chosenNotice = values?.value("notice-\(topic.key)").flatMap(Int.init) ?? topic.currentNoticeVersion
            let versions: [[String: Any]] = try await ledger.store.notices(topicKey: topic.key).reversed().map { n in
                ["version": n.version, "excerpt": String(n.text.prefix(60)) + (n.text.count > 60 ? "…" : ""), "selected": n.version == chosenNotice]
            }
            topics.append(["key": topic.key, "title": topic.title, "current": Self.yesNo(preferences[topic.key]?.effectiveState(at: at) ?? .none),
                           "none": chosen.isEmpty, "yes": chosen == "yes", "no": chosen == "no", "versions": versions])
        }
        let channel = values?.value("channel") ?? StaffChannel.phone.rawValue
        let model: [String: Any] = [
            "contact": ["id": contact.id.uuidString.lowercased(), "email": contact.email.value], "topics": topics,
            "channels": Self.channels.map { ["value": $0.0.rawValue, "label": $0.1, "selected": $0.0.rawValue == channel] },
            "occurred": values?.value("occurred") ?? "", "note": values?.value("note") ?? "",
            "maxOccurred": localInput(at), "zone": zone.identifier,
        ]
        return render("console-record", title: "Record an instruction", visit: visit, nav: "Contacts", status: status, model: model, errors: errors)
    }

    /// Records what a person said through the one write path, source `staff`,
    /// with the channel, when it was said, the note and the notice read out.
    func record(_ request: Request, _ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let contact = try await ledger.existingContact(contactID(context))
        let form = visit.form
        var problems: [String] = []
        var changes: [TopicChange] = []
        for topic in try await ledger.store.topics(includeRetired: false) {
            guard let value = form.value("change-\(topic.key)"), !value.isEmpty else { continue }
            guard value == "yes" || value == "no" else { problems.append("\(topic.title): choose Yes, No or No change"); continue }
            changes.append(TopicChange(topicKey: topic.key, intent: value == "yes" ? .optIn : .optOut,
                                       noticeVersion: form.value("notice-\(topic.key)").flatMap(Int.init)))
        }
        if changes.isEmpty { problems.append("Choose at least one topic the person gave an instruction about.") }
        guard let channel = form.value("channel").flatMap(StaffChannel.init(rawValue:)) else {
            return try await recordPage(context, visit, values: form, errors: ["Choose how the person told you."], status: .unprocessableContent)
        }
        var occurredAt: Date?
        if let text = form.value("occurred"), !text.isEmpty {
            occurredAt = parseLocal(text)
            if occurredAt == nil { problems.append("When they said it: '\(text.prefix(40))' is not a date and time") }
        }
        let note = (form.value("note") ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        if note.isEmpty { problems.append("Note: write what the person said, or the script you used.") }
        if !problems.isEmpty { return try await recordPage(context, visit, values: form, errors: problems, status: .unprocessableContent) }
        do {
            let result = try await ledger.recordChange(ChangeRequest(
                contactID: contact.id, changes: changes, source: .staff, channel: channel, actor: .staff(visit.user.id.uuidString.lowercased()),
                occurredAt: occurredAt, evidence: Evidence(personal: PersonalEvidence(note: note)), changesField: "topics"))
            try await ledger.audit(visit.user, "record_instruction", target: "contact:\(contact.id.uuidString.lowercased())",
                                   detail: "\(channel.rawValue): " + changes.map { "\($0.topicKey) \($0.intent == .optIn ? "yes" : "no")" }.joined(separator: ", ")
                                       + " (\(result.events.count) recorded)", ipAddress: context.remoteIP)
            return redirect("/console/contacts/\(contact.id.uuidString.lowercased())?recorded=\(result.events.count)")
        } catch DomainError.invalid(let errors) {
            return try await recordPage(context, visit, values: form, errors: errors.map { Self.humanise($0) }, status: .unprocessableContent)
        }
    }

    /// A `datetime-local` value for `date` in the console's time zone.
    func localInput(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = zone
        formatter.dateFormat = "yyyy-MM-dd'T'HH:mm"
        return formatter.string(from: date)
    }

    static func humanise(_ error: ValidationError) -> String {
        switch error.field {
        case "occurredAt": "When they said it: \(error.message)"
        case "evidence.note": "Note: \(error.message)"
        default: error.description
        }
    }

    /// `datetime-local` values (`2026-11-29T10:15`), read in the console's time zone.
    func parseLocal(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = zone
        for format in ["yyyy-MM-dd'T'HH:mm", "yyyy-MM-dd'T'HH:mm:ss", "yyyy-MM-dd HH:mm"] {
            formatter.dateFormat = format
            if let date = formatter.date(from: text) { return date }
        }
        return nil
    }

    func notice(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let key = try context.parameters.require("key")
        let topic = try await ledger.existingTopic(key)
        guard let version = Int(try context.parameters.require("version")),
              let notice = try await ledger.store.notice(topicKey: topic.key, version: version) else {
            throw DomainError.notFound(what: "notice", id: "\(key) v\(context.parameters.get("version") ?? "")")
        }
        return render("console-notice", title: "Notice v\(notice.version): \(topic.title)", visit: visit, nav: "Topics", model: [
            "topicKey": topic.key, "topicTitle": topic.title, "version": notice.version, "published": time(notice.createdAt),
            "current": notice.version == topic.currentNoticeVersion, "text": notice.text,
        ])
    }

    // MARK: Topics

    func topics(_ visit: ConsoleVisit, errors: [String] = [], status: HTTPResponse.Status = .ok, flash: String? = nil) async throws -> Response {
        let topics = try await ledger.store.topics(includeRetired: true).map { t -> [String: Any] in
            ["key": t.key, "title": t.title, "category": t.category, "status": t.status.rawValue, "doi": t.requiresDoubleOptIn,
             "lifetime": Self.lifetimeText(t), "version": t.currentNoticeVersion]
        }
        return render("console-topics", title: "Topics", visit: visit, nav: "Topics", status: status, model: ["topics": topics], flash: flash, errors: errors)
    }

    /// An optional whole number of days from a form field: nil when empty.
    static func days(_ f: FormBody, _ name: String, label: String) throws -> Int? {
        guard let text = f.value(name)?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
        guard let days = Int(text) else { throw DomainError.invalid(field: name, "\(label): '\(text.prefix(20))' is not a number of days") }
        return days
    }

    func createTopic(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let f = visit.form
        let lifetime: Int?, repermission: Int?
        do {
            lifetime = try Self.days(f, "lifetime", label: "Lifetime")
            repermission = try Self.days(f, "repermission", label: "Re-permission")
        } catch DomainError.invalid(let errors) {
            return try await topics(visit, errors: errors.map(\.message), status: .unprocessableContent)
        }
        do {
            let topic = try await ledger.createTopic(
                Topic(key: f.value("key") ?? "", title: f.value("title") ?? "", description: f.value("description") ?? "",
                      category: (f.value("category") ?? "").isEmpty ? "general" : f.value("category")!, requiresDoubleOptIn: f.value("doi") == "1",
                      consentLifetimeDays: lifetime, repermissionDaysBefore: repermission, createdAt: Date()),
                noticeText: f.value("notice") ?? "")
            try await ledger.audit(visit.user, "topic_create", target: "topic:\(topic.key)", ipAddress: context.remoteIP)
            return redirect("/console/topics/\(topic.key)")
        } catch DomainError.invalid(let errors) {
            return try await topics(visit, errors: errors.map(\.description), status: .unprocessableContent)
        } catch DomainError.conflict(_, let message) {
            return try await topics(visit, errors: [message], status: .conflict)
        }
    }

    func topic(_ context: AssentRequestContext, _ visit: ConsoleVisit, errors: [String] = [], status: HTTPResponse.Status = .ok,
               flash: String? = nil) async throws -> Response {
        let topic = try await ledger.existingTopic(try context.parameters.require("key"))
        let notices = try await ledger.store.notices(topicKey: topic.key)
        return render("console-topic", title: topic.title, visit: visit, nav: "Topics", status: status, model: [
            "topic": ["key": topic.key, "title": topic.title, "category": topic.category, "description": topic.description,
                      "status": topic.status.rawValue, "doi": topic.requiresDoubleOptIn,
                      "lifetime": Self.lifetimeText(topic), "lifetimeDays": topic.consentLifetimeDays.map(String.init) ?? "",
                      "repermissionDays": topic.repermissionDaysBefore.map(String.init) ?? ""],
            "active": topic.isActive, "currentNotice": notices.last?.text ?? "",
            "notices": notices.reversed().map { ["version": $0.version, "published": time($0.createdAt),
                                                 "excerpt": String($0.text.prefix(80)) + ($0.text.count > 80 ? "…" : "")] },
        ], flash: flash, errors: errors)
    }

    func editTopic(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let key = try context.parameters.require("key")
        let f = visit.form
        do {
            let lifetime = try Self.days(f, "lifetime", label: "Lifetime")
            let repermission = try Self.days(f, "repermission", label: "Re-permission")
            _ = try await ledger.updateTopic(key: key) { t in
                if let title = f.value("title") { t.title = title }
                if let category = f.value("category"), !category.isEmpty { t.category = category }
                if let description = f.value("description") { t.description = description }
                // Applies to grants given from now on; those already given keep their expiry.
                if f.value("lifetime") != nil { t.consentLifetimeDays = lifetime }
                if f.value("repermission") != nil { t.repermissionDaysBefore = repermission }
            }
            try await ledger.audit(visit.user, "topic_update", target: "topic:\(key)", ipAddress: context.remoteIP)
            return try await topic(context, visit, flash: "Saved.")
        } catch DomainError.invalid(let errors) {
            return try await topic(context, visit, errors: errors.map(\.description), status: .unprocessableContent)
        }
    }

    static func lifetimeText(_ t: Topic) -> String {
        guard let days = t.consentLifetimeDays else { return "until withdrawn" }
        return "\(days) days" + (t.repermissionDaysBefore.map { ", renewal asked \($0) days before" } ?? "")
    }

    func publishNotice(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let key = try context.parameters.require("key")
        do {
            let notice = try await ledger.publishNotice(topicKey: key, text: visit.form.value("text") ?? "")
            try await ledger.audit(visit.user, "notice_publish", target: "topic:\(key)", detail: "version \(notice.version)", ipAddress: context.remoteIP)
            return try await topic(context, visit, flash: "Notice version \(notice.version) is current.")
        } catch DomainError.invalid(let errors) {
            return try await topic(context, visit, errors: errors.map(\.description), status: .unprocessableContent)
        }
    }

    func retireTopic(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let topic = try await ledger.retireTopic(key: try context.parameters.require("key"))
        try await ledger.audit(visit.user, "topic_retire", target: "topic:\(topic.key)", ipAddress: context.remoteIP)
        return try await self.topic(context, visit, flash: "Retired.")
    }

    // MARK: Forms

    func forms(_ visit: ConsoleVisit, errors: [String] = [], status: HTTPResponse.Status = .ok, flash: String? = nil) async throws -> Response {
        let base = pages.site.baseURL
        let forms = try await ledger.store.forms(includeRetired: true).map { f -> [String: Any] in
            ["id": f.id, "title": f.definition.title, "kind": f.definition.kind.rawValue, "topics": f.definition.topics.map(\.key).joined(separator: ", "),
             "version": f.version, "status": f.status.rawValue, "active": f.isActive, "url": "\(base)/f/\(f.id)", "csrf": visit.csrf]
        }
        let topics = try await ledger.store.topics(includeRetired: false).map { ["key": $0.key, "title": $0.title] }
        return render("console-forms", title: "Forms", visit: visit, nav: "Forms", status: status,
                      model: ["forms": forms, "hasForms": !forms.isEmpty, "topics": topics], flash: flash, errors: errors)
    }

    func createForm(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let f = visit.form
        let origins = (f.value("origins") ?? "").split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let successURL = f.value("successUrl").flatMap { $0.isEmpty ? nil : $0 }
        do {
            let form = try await ledger.createForm(id: f.value("id") ?? "", definition: FormDefinition(
                title: f.value("title") ?? "", introduction: f.value("introduction") ?? "",
                kind: FormDefinition.Kind(rawValue: f.value("kind") ?? "") ?? .signup, topics: f.values("topic").map { FormTopic(key: $0) },
                doubleOptIn: f.value("doi") == "1", askName: f.value("askName") == "1", successURL: successURL, allowedOrigins: origins))
            try await ledger.audit(visit.user, "form_create", target: "form:\(form.id)", ipAddress: context.remoteIP)
            return try await forms(visit, flash: "Form \(form.id) is served at \(pages.site.baseURL)/f/\(form.id).")
        } catch DomainError.invalid(let errors) {
            return try await forms(visit, errors: errors.map(\.description), status: .unprocessableContent)
        } catch DomainError.conflict(_, let message) {
            return try await forms(visit, errors: [message], status: .conflict)
        }
    }

    /// One form: its settings, where it is served, the HTML to embed it, and (for admins) an editor that saves the next version.
    func form(_ context: AssentRequestContext, _ visit: ConsoleVisit, errors: [String] = [], status: HTTPResponse.Status = .ok,
              flash: String? = nil) async throws -> Response {
        let form = try await ledger.existingForm(try context.parameters.require("id"))
        let d = form.definition
        let offered = Set(d.topics.map(\.key))
        let topics = try await ledger.store.topics(includeRetired: false).map { t -> [String: Any] in
            ["key": t.key, "title": t.title, "checked": offered.contains(t.key),
             "notice": d.topics.first { $0.key == t.key }?.noticeVersion.map { "notice v\($0)" } ?? ""]
        }
        let embed = form.isActive ? try await formEmbedHTML(ledger: ledger, form: form, site: pages.site) : ""
        return render("console-form", title: d.title, visit: visit, nav: "Forms", status: status, model: [
            "form": ["id": form.id, "version": form.version, "status": form.status.rawValue, "kind": d.kind.rawValue, "title": d.title,
                     "introduction": d.introduction, "doi": d.doubleOptIn, "askName": d.askName, "successUrl": d.successURL ?? "",
                     "origins": d.allowedOrigins.joined(separator: "\n"), "signup": d.kind == .signup, "preferences": d.kind == .preferences,
                     "url": "\(pages.site.baseURL)/f/\(form.id)", "saved": time(form.versionCreatedAt)],
            "active": form.isActive, "topics": topics, "embed": embed,
        ], flash: flash, errors: errors)
    }

    func editForm(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let id = try context.parameters.require("id")
        let f = visit.form
        let origins = (f.value("origins") ?? "").split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let chosen = f.values("topic")
        do {
            let saved = try await ledger.updateForm(id: id) { d in
                d.title = f.value("title") ?? d.title
                d.introduction = f.value("introduction") ?? d.introduction
                d.kind = FormDefinition.Kind(rawValue: f.value("kind") ?? "") ?? d.kind
                // Topics kept keep their pinned notice; new ones get the current notice.
                d.topics = chosen.map { key in d.topics.first { $0.key == key } ?? FormTopic(key: key) }
                d.doubleOptIn = f.value("doi") == "1"
                d.askName = f.value("askName") == "1"
                d.successURL = f.value("successUrl").flatMap { $0.isEmpty ? nil : $0 }
                d.allowedOrigins = origins
            }
            try await ledger.audit(visit.user, "form_update", target: "form:\(id)", detail: "version \(saved.version)", ipAddress: context.remoteIP)
            return try await form(context, visit, flash: "Saved as version \(saved.version).")
        } catch DomainError.invalid(let errors) {
            return try await form(context, visit, errors: errors.map(\.description), status: .unprocessableContent)
        }
    }

    func retireForm(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let form = try await ledger.retireForm(id: try context.parameters.require("id"))
        try await ledger.audit(visit.user, "form_retire", target: "form:\(form.id)", ipAddress: context.remoteIP)
        return try await forms(visit, flash: "Form \(form.id) is retired.")
    }

    // MARK: API keys

    func keys(_ visit: ConsoleVisit, errors: [String] = [], status: HTTPResponse.Status = .ok, flash: String? = nil) async throws -> Response {
        let keys = try await ledger.store.apiKeys().map { k -> [String: Any] in
            ["id": k.id, "name": k.name, "scope": k.scope.rawValue, "created": time(k.createdAt),
             "status": k.isActive ? "active" : "revoked \(time(k.revokedAt))", "active": k.isActive, "csrf": visit.csrf]
        }
        return render("console-keys", title: "API keys", visit: visit, nav: "Keys", status: status, model: ["keys": keys], flash: flash, errors: errors)
    }

    func createKey(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let name = visit.form.value("name") ?? ""
        guard let scope = visit.form.value("scope").flatMap(APIScope.init(rawValue:)) else {
            return try await keys(visit, errors: ["Scope: choose read, write or admin."], status: .unprocessableContent)
        }
        do { try APIKey.validateName(name) } catch DomainError.invalid(let errors) {
            return try await keys(visit, errors: errors.map(\.description), status: .unprocessableContent)
        }
        let (key, token) = APIKey.generate(name: name, scope: scope, now: Date().truncatedToMilliseconds)
        try await ledger.store.insertAPIKey(key)
        try await ledger.audit(visit.user, "key_create", target: "key:\(key.id)", detail: "\(scope.rawValue): \(name)", ipAddress: context.remoteIP)
        return message(.ok, title: "API key created", paragraphs: ["\(scope.rawValue) key “\(name)” (id \(key.id))."], visit: visit,
                       secret: ("Use it as 'Authorization: Bearer <key>':", token), back: ("/console/keys", "Back to API keys"))
    }

    func revokeKey(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let id = try context.parameters.require("id")
        guard try await ledger.store.apiKey(id: id) != nil else { throw DomainError.notFound(what: "API key", id: String(id.prefix(64))) }
        _ = try await ledger.store.revokeAPIKey(id: id, at: Date().truncatedToMilliseconds)
        ledger.apiKeyCache.invalidate(id)
        try await ledger.audit(visit.user, "key_revoke", target: "key:\(id)", ipAddress: context.remoteIP)
        return try await keys(visit, flash: "Key \(id) is revoked.")
    }

    // MARK: Users

    func users(_ visit: ConsoleVisit, errors: [String] = [], status: HTTPResponse.Status = .ok, flash: String? = nil) async throws -> Response {
        let users = try await ledger.store.staffUsers().map { u -> [String: Any] in
            ["id": u.id.uuidString.lowercased(), "email": u.email.value, "name": u.name, "role": u.role.rawValue,
             "status": !u.isActive ? "disabled" : (u.lockedUntil.map { $0 > ledger.environment.now() ? "locked until \(time($0))" : nil } ?? nil) ?? "active",
             "active": u.isActive, "isSelf": u.id == visit.user.id, "csrf": visit.csrf]
        }
        return render("console-users", title: "Users", visit: visit, nav: "Users", status: status, model: ["users": users], flash: flash, errors: errors)
    }

    func createUser(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        guard let role = visit.form.value("role").flatMap(StaffUser.Role.init(rawValue:)) else {
            return try await users(visit, errors: ["Role: choose admin, agent or auditor."], status: .unprocessableContent)
        }
        let password = Ledger.oneTimePassword()
        do {
            let user = try await ledger.createStaffUser(email: visit.form.value("email") ?? "", name: visit.form.value("name") ?? "", role: role,
                                                        password: password, mustChangePassword: true, actor: visit.user, ipAddress: context.remoteIP)
            return message(.ok, title: "User added", paragraphs: ["\(user.name) <\(user.email.value)> can sign in as \(role.rawValue)."], visit: visit,
                           secret: ("One-time password (they choose their own at first sign-in):", password), back: ("/console/users", "Back to users"))
        } catch DomainError.invalid(let errors) {
            return try await users(visit, errors: errors.map(\.description), status: .unprocessableContent)
        } catch DomainError.conflict(_, let message) {
            return try await users(visit, errors: [message], status: .conflict)
        }
    }

    func staffID(_ context: AssentRequestContext) throws -> UUID {
        let text = try context.parameters.require("id")
        guard let id = UUID(uuidString: text) else { throw DomainError.notFound(what: "staff user", id: String(text.prefix(64))) }
        return id
    }

    func disableUser(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        do {
            let user = try await ledger.disableStaffUser(try staffID(context), actor: visit.user, ipAddress: context.remoteIP)
            return try await users(visit, flash: "\(user.email.value) is disabled and signed out.")
        } catch DomainError.conflict(_, let message) {
            return try await users(visit, errors: [message], status: .conflict)
        }
    }

    func resetUser(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let id = try staffID(context)
        let password: String
        do {
            password = try await ledger.resetStaffPassword(id, actor: visit.user, ipAddress: context.remoteIP)
        } catch DomainError.conflict(_, let message) {
            return try await users(visit, errors: [message], status: .conflict)
        }
        let user = try await ledger.existingStaffUser(id)
        return message(.ok, title: "Password reset", paragraphs: ["\(user.email.value) is signed out everywhere and unlocked."], visit: visit,
                       secret: ("New one-time password:", password), back: ("/console/users", "Back to users"))
    }

    // MARK: The request register

    /// Data-subject requests, open ones soonest due first, overdue and due-this-week marked.
    func requests(_ visit: ConsoleVisit, errors: [String] = [], status: HTTPResponse.Status = .ok, flash: String? = nil,
                  values: FormBody? = nil) async throws -> Response {
        let at = ledger.environment.now()
        let all = try await ledger.store.subjectRequests(contactID: nil, status: nil, limit: 10_000)
        let ordered = all.filter { $0.status == .open }.sorted { $0.dueAt < $1.dueAt } + all.filter { $0.status == .closed }.sorted { $0.dueAt > $1.dueAt }
        var rows: [[String: Any]] = []
        for r in ordered.prefix(500) {
            let contact = try await ledger.store.contact(id: r.contactID)
            let flag = r.isOverdue(at: at) ? "overdue" : r.status == .open && r.dueAt < at.addingTimeInterval(7 * 86_400) ? "due this week" : ""
            rows.append([
                "id": r.id.uuidString.lowercased(), "kind": r.kind.rawValue, "channel": r.channel, "received": time(r.createdAt), "due": time(r.dueAt),
                "flag": flag, "overdue": flag == "overdue", "soon": flag == "due this week", "status": r.status.rawValue, "open": r.status == .open,
                "contactId": r.contactID.uuidString.lowercased(), "contact": contact.map { $0.isErased ? "(erased)" : $0.email.value } ?? "",
                "identity": r.identityNote ?? "", "note": r.note ?? "", "extended": r.extensionReason ?? false, "handler": r.handler ?? "",
                "closed": time(r.closedAt), "outcome": r.outcome ?? "", "csrf": visit.csrf, "canManage": visit.user.role == .admin,
            ])
        }
        return render("console-requests", title: "Requests", visit: visit, nav: "Requests", status: status, model: [
            "requests": rows, "hasRequests": !rows.isEmpty, "canRecord": Self.recorders.contains(visit.user.role),
            "kinds": SubjectRequest.Kind.allCases.map { ["value": $0.rawValue, "selected": $0.rawValue == values?.value("kind")] },
            "channels": Self.channels.map { ["value": $0.0.rawValue, "label": $0.1] },
            "values": ["contact": values?.value("contact") ?? "", "received": values?.value("received") ?? "", "identity": values?.value("identity") ?? "",
                       "note": values?.value("note") ?? ""], "zone": zone.identifier,
        ], flash: flash, errors: errors)
    }

    func recordRequest(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let f = visit.form
        var problems: [String] = []
        let text = (f.value("contact") ?? "").trimmingCharacters(in: .whitespaces)
        var contact: Contact?
        if let id = UUID(uuidString: text) { contact = try await ledger.store.contact(id: id) }
        else if let email = try? EmailAddress(text) { contact = try await ledger.store.contact(email: email) }
        else if !text.isEmpty, (try? TextCheck.check(text, field: "contact", max: 200)) != nil { contact = try await ledger.store.contact(externalID: text) }
        if contact == nil { problems.append("Contact: no contact matches '\(text.prefix(100))'; add them under Contacts first") }
        let kind = f.value("kind").flatMap(SubjectRequest.Kind.init(rawValue:))
        if kind == nil { problems.append("Kind: choose access, erasure, objection or rectification") }
        let channel = f.value("channel").flatMap(StaffChannel.init(rawValue:))
        if channel == nil { problems.append("How it was made: choose one") }
        var received: Date?
        if let value = f.value("received"), !value.isEmpty {
            received = parseLocal(value)
            if received == nil { problems.append("Received: '\(value.prefix(40))' is not a date and time") }
        }
        guard problems.isEmpty, let contact, let kind, let channel else {
            return try await requests(visit, errors: problems, status: .unprocessableContent, values: f)
        }
        do {
            let request = try await ledger.recordSubjectRequest(contactID: contact.id, kind: kind, channel: channel.rawValue, note: f.value("note"),
                                                                receivedAt: received, identityNote: f.value("identity"), actor: visit.user,
                                                                ipAddress: context.remoteIP)
            return try await requests(visit, flash: "Recorded: \(kind.rawValue) request, due \(time(request.dueAt)).")
        } catch DomainError.invalid(let errors) {
            return try await requests(visit, errors: errors.map(\.description), status: .unprocessableContent, values: f)
        }
    }

    func requestID(_ context: AssentRequestContext) throws -> UUID {
        let text = try context.parameters.require("id")
        guard let id = UUID(uuidString: text) else { throw DomainError.notFound(what: "request", id: String(text.prefix(64))) }
        return id
    }

    func extendRequest(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        do {
            let request = try await ledger.extendSubjectRequest(try requestID(context), reason: visit.form.value("reason") ?? "", actor: visit.user,
                                                                ipAddress: context.remoteIP)
            return try await requests(visit, flash: "Extended: now due \(time(request.dueAt)).")
        } catch DomainError.invalid(let errors) {
            return try await requests(visit, errors: errors.map(\.description), status: .unprocessableContent)
        } catch DomainError.conflict(_, let message) {
            return try await requests(visit, errors: [message], status: .conflict)
        }
    }

    func completeRequest(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        do {
            _ = try await ledger.completeSubjectRequest(try requestID(context), outcome: visit.form.value("outcome") ?? "", actor: visit.user,
                                                        ipAddress: context.remoteIP)
            return try await requests(visit, flash: "Closed.")
        } catch DomainError.invalid(let errors) {
            return try await requests(visit, errors: errors.map(\.description), status: .unprocessableContent)
        }
    }

    // MARK: Audit log and verify

    static let auditActions = ["sign_in", "sign_in_failed", "sign_out", "password_change", "view_evidence", "export_contact", "contact_create", "erase_contact", "record_objection", "suppression_override", "request_record", "request_extend", "request_complete", "contact_rectify",
                               "record_instruction",
                               "verify", "topic_create", "topic_update", "notice_publish", "topic_retire", "form_create", "form_update", "form_retire",
                               "key_create", "key_revoke", "user_create", "user_disable", "user_password_reset"]

    func auditLog(_ request: Request, _ visit: ConsoleVisit) async throws -> Response {
        let q = request.uri.queryParameters
        var query = AuditQuery(limit: 500)
        var errors: [String] = []
        let actorText = (q.get("actor") ?? "").trimmingCharacters(in: .whitespaces)
        if !actorText.isEmpty {
            if let email = try? EmailAddress(actorText), let user = try await ledger.store.staffUser(email: email) {
                query.actorID = user.id
            } else {
                errors.append("Who: no staff user '\(actorText.prefix(100))'")
            }
        }
        if let action = q.get("action"), !action.isEmpty {
            if (try? TextCheck.check(action, field: "action", max: 64)) == nil { errors.append("Action: not a known action") } else { query.action = action }
        }
        if let target = q.get("target"), !target.isEmpty {
            if (try? TextCheck.check(target, field: "target", max: 200)) == nil { errors.append("Target: must be plain text") } else { query.target = target }
        }
        let day = DateFormatter()
        day.locale = Locale(identifier: "en_US_POSIX")
        day.timeZone = TimeZone(identifier: "UTC")
        day.dateFormat = "yyyy-MM-dd"
        for (name, text) in [("From", q.get("since") ?? ""), ("Until", q.get("until") ?? "")] where !text.isEmpty {
            guard let date = day.date(from: text) else { errors.append("\(name): '\(text.prefix(20))' is not a date"); continue }
            if name == "From" { query.since = date } else { query.until = date.addingTimeInterval(86_400) }
        }
        let entries = errors.isEmpty ? try await ledger.store.auditEntries(query) : []
        return render("console-audit", title: "Audit log", visit: visit, nav: "Audit", status: errors.isEmpty ? .ok : .unprocessableContent, model: [
            "entries": entries.map { e -> [String: Any] in
                ["iso": Self.iso(e.at), "when": time(e.at), "actor": e.actorEmail, "action": e.action, "target": e.target ?? "",
                 "detail": e.detail ?? "", "ip": e.ipAddress ?? ""]
            },
            "actions": Self.auditActions.map { ["value": $0, "selected": $0 == query.action] },
            "filter": ["actor": actorText, "target": query.target ?? "", "since": q.get("since") ?? "", "until": q.get("until") ?? ""],
        ], errors: errors)
    }

    func verifyPage(_ visit: ConsoleVisit, report: VerifyReport?) -> Response {
        var model: [String: Any] = ["ran": report != nil]
        if let report {
            model["intact"] = report.isIntact
            model["contacts"] = report.contacts
            model["events"] = report.events
            model["breaks"] = report.breaks.map { "contact \($0.contactID.uuidString.lowercased()): \($0)" }
        }
        return render("console-verify", title: "Verify the ledger", visit: visit, nav: "Verify", status: report.map { $0.isIntact ? .ok : .conflict } ?? .ok,
                      model: model)
    }

    func verify(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let report = try await ledger.verifyAndRecord(origin: "console").report
        try await ledger.audit(visit.user, "verify", detail: report.isIntact ? "intact: \(report.contacts) contacts, \(report.events) events"
                                   : "\(report.breaks.count) broken chains", ipAddress: context.remoteIP)
        return verifyPage(visit, report: report)
    }
}
