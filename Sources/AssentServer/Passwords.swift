import AssentStore
import HummingbirdBcrypt
import NIOPosix

extension PasswordHasher {
    /// bcrypt from hummingbird-auth, run on NIO's blocking thread pool: cost
    /// 12 (the default) takes a noticeable fraction of a second per hash on
    /// purpose, which must not stall the threads serving requests. Tests use a low cost.
    public static func bcrypt(cost: UInt8 = 12) -> PasswordHasher {
        PasswordHasher(
            hash: { password in
                (try? await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: cost) }) ?? Bcrypt.hash(password, cost: cost)
            },
            verify: { password, hash in
                (try? await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: hash) }) ?? Bcrypt.verify(password, hash: hash)
            })
    }
}
