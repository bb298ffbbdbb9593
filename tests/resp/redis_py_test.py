"""redis-py against a real geokv-server's Redis port: every command family in
RESP2 and RESP3, pipelines, errors as redis-py raises them, and the limits."""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import redis

SERVER = None


class Server:
    """geokv-server on free loopback ports, with its own data dir."""

    def __init__(self, binary, *flags):
        self.dir = tempfile.mkdtemp(prefix="geokv-redis-py-")
        self.log_path = os.path.join(self.dir, "server.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [binary, "--data-dir", os.path.join(self.dir, "data"), "--listen", "127.0.0.1:0",
                 "--resp-listen", "127.0.0.1:0", "--durability", "wal", *flags],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            with open(self.log_path) as log:
                m = re.search(r"redis protocol listening on .* port (\d+)", log.read())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("geokv-server did not start:\n" + open(self.log_path).read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisPyTest(unittest.TestCase):
    protocol = 2

    @classmethod
    def setUpClass(cls):
        cls.server = Server(SERVER, "--max-value-bytes", "64KiB", "--resp-max-args", "5000")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def client(self, **kwargs):
        return redis.Redis(port=self.server.port, protocol=self.protocol,
                           socket_timeout=10, **kwargs)

    def setUp(self):
        self.r = self.client()
        self.prefix = f"{self.id()}:"

    def tearDown(self):
        self.r.close()

    def k(self, name):
        return self.prefix + name

    def test_strings(self):
        r, k = self.r, self.k
        self.assertTrue(r.ping())
        self.assertTrue(r.set(k("a"), b"\x00binary\r\n"))
        self.assertEqual(r.get(k("a")), b"\x00binary\r\n")
        self.assertIsNone(r.get(k("missing")))
        self.assertEqual(r.set(k("a"), "new", get=True), b"\x00binary\r\n")
        self.assertEqual(r.strlen(k("a")), 3)
        self.assertTrue(r.mset({k("m1"): "1", k("m2"): "2"}))
        self.assertEqual(r.mget([k("m1"), k("missing"), k("m2")]), [b"1", None, b"2"])
        self.assertEqual(r.exists(k("m1"), k("m2"), k("missing")), 2)
        self.assertEqual(r.type(k("m1")), b"string")
        self.assertEqual(r.delete(k("m1"), k("missing")), 1)
        self.assertEqual(r.unlink(k("m2")), 1)
        self.assertEqual(r.exists(k("m1"), k("m2")), 0)

    def test_counters(self):
        r, k = self.r, self.k
        self.assertEqual(r.incr(k("c")), 1)
        self.assertEqual(r.incrby(k("c"), 10), 11)
        self.assertEqual(r.decr(k("c")), 10)
        self.assertEqual(r.decrby(k("c"), 4), 6)
        self.assertEqual(r.get(k("c")), b"6")
        r.set(k("s"), "text")
        with self.assertRaisesRegex(redis.ResponseError, "^WRONGTYPE"):
            r.incr(k("s"))
        with self.assertRaisesRegex(redis.ResponseError, "^WRONGTYPE"):
            r.set(k("c"), "x")
        with self.assertRaisesRegex(redis.ResponseError, "not an integer"):
            r.incrby(k("c"), "x")
        self.assertEqual(r.get(k("c")), b"6")

    def test_sets(self):
        r, k = self.r, self.k
        self.assertEqual(r.sadd(k("s"), "a", "b", "c"), 3)
        self.assertEqual(r.sadd(k("s"), "c", "d"), 1)
        self.assertEqual(r.srem(k("s"), "a", "zz"), 1)
        self.assertEqual(r.smembers(k("s")), {b"b", b"c", b"d"})
        self.assertTrue(r.sismember(k("s"), "b"))
        self.assertEqual(r.smismember(k("s"), ["b", "a"]), [1, 0] if self.protocol == 2 else [True, False])
        self.assertEqual(r.scard(k("s")), 3)
        self.assertEqual(r.type(k("s")), b"set")
        with self.assertRaisesRegex(redis.ResponseError, "^WRONGTYPE"):
            r.get(k("s"))
        members = {b"m%04d" % i for i in range(2500)}
        r.sadd(k("big"), *members)
        self.assertEqual(r.smembers(k("big")), members)
        self.assertEqual(set(r.sscan_iter(k("big"), count=300)), members)
        self.assertEqual(set(r.sscan_iter(k("big"), match="m00*")), {b"m%04d" % i for i in range(100)})
        self.assertEqual(r.delete(k("s")), 1)
        self.assertEqual(r.smembers(k("s")), set())

    def test_scan(self):
        r, k = self.r, self.k
        for i in range(300):
            r.set(k(f"scan:{i}"), i)
        r.sadd(k("scanset"), "x")
        found = set(r.scan_iter(match=self.prefix + "scan:*", count=50))
        self.assertEqual(found, {k(f"scan:{i}").encode() for i in range(300)})
        self.assertIn(k("scanset").encode(), set(r.scan_iter(_type="set")))
        with self.assertRaisesRegex(redis.ResponseError, "invalid cursor"):
            r.scan(cursor=99999)

    def test_pipelines_keep_order(self):
        r, k = self.r, self.k
        p = r.pipeline(transaction=False)
        for i in range(2000):
            p.set(k(f"p{i % 10}"), i)
            p.get(k(f"p{i % 10}"))
            p.incr(k("pc"))
        results = p.execute()
        self.assertEqual(results[1::3], [str(i).encode() for i in range(2000)])
        self.assertEqual(results[2::3], list(range(1, 2001)))
        p = r.pipeline(transaction=False)
        p.set(k("x"), "1")
        p.incr(k("x"))
        p.get(k("x"))
        out = p.execute(raise_on_error=False)
        self.assertTrue(out[0])
        self.assertIsInstance(out[1], redis.ResponseError)
        self.assertEqual(out[2], b"1")

    def test_connection_commands(self):
        r = self.r
        self.assertTrue(r.client_setname("tester"))
        self.assertIn(r.client_getname(), ("tester", b"tester"))
        self.assertGreater(r.client_id(), 0)
        self.assertTrue(any(c.get("name") == "tester" for c in r.client_list()))
        self.assertEqual(r.echo("hi"), b"hi")
        self.assertEqual(len(r.time()), 2)
        self.assertGreaterEqual(r.dbsize(), 0)
        info = r.info()
        self.assertEqual(info["role"], "master")
        self.assertIn("db0", info)
        self.assertIn("geokv_peers", r.info("replication"))
        self.assertGreater(r.command_count(), 30)
        with self.assertRaisesRegex(redis.ResponseError, "DB index is out of range"):
            self.client(db=1).ping()
        with self.assertRaisesRegex(redis.ResponseError, "unknown command 'NOPE'"):
            r.execute_command("NOPE", "x")
        with self.assertRaisesRegex(redis.ResponseError, "wrong number of arguments for 'get'"):
            r.execute_command("GET")
        with self.assertRaises(redis.ResponseError):
            self.client(password="secret").ping()

    def test_geokv_commands(self):
        r, k = self.r, self.k
        self.assertIsNone(r.execute_command("GEOKV.TOKEN"))
        r.set(k("t"), "v")
        token = r.execute_command("GEOKV.TOKEN")
        self.assertRegex(token, rb"^[0-9a-f]+$")
        other = self.client()
        self.assertTrue(other.execute_command("GEOKV.AFTER", token))
        self.assertEqual(other.get(k("t")), b"v")
        self.assertTrue(other.execute_command("GEOKV.CONSISTENCY", "all"))
        self.assertEqual(other.execute_command("GEOKV.CONSISTENCY"), b"all")
        with self.assertRaisesRegex(redis.ResponseError, "one, quorum, all"):
            other.execute_command("GEOKV.CONSISTENCY", "most")
        # A one-node region: waiting for its own region returns at once.
        self.assertTrue(r.execute_command("GEOKV.WAITREPLICATED", 1000, "local"))
        self.assertTrue(r.execute_command("GEOKV.MVSET", k("mv"), "one"))
        values, context = r.execute_command("GEOKV.MVGET", k("mv"))
        self.assertEqual(values, [b"one"])
        self.assertTrue(r.execute_command("GEOKV.MVSET", k("mv"), "two", context))
        self.assertEqual(r.execute_command("GEOKV.MVGET", k("mv"))[0], [b"two"])
        with self.assertRaisesRegex(redis.ResponseError, "context"):
            r.execute_command("GEOKV.MVSET", k("mv"), "x", "nothex")

    def test_refusals_change_nothing(self):
        r, k = self.r, self.k
        r.set(k("r"), "keep")
        for options in ({"nx": True}, {"xx": True}, {"ex": 10}, {"px": 10}, {"keepttl": True}):
            with self.assertRaisesRegex(redis.ResponseError, "not supported"):
                r.set(k("r"), "changed", **options)
        with self.assertRaisesRegex(redis.ResponseError, "^TOOLARGE key of 5000 bytes"):
            r.set(b"k" * 5000, "v")
        with self.assertRaisesRegex(redis.ResponseError, "^TOOLARGE"):
            r.mset({k("r"): "x", b"k" * 5000: "v"})
        # A bulk string over the value limit cannot be skipped: the
        # connection ends with a protocol error, which the client reads or,
        # when the close finds its value still unsent, sees as a reset.
        big = self.client(retry_on_error=[], retry=None)
        with self.assertRaises((redis.ResponseError, redis.ConnectionError)) as refused:
            big.set(k("r"), b"v" * 65537)
        if isinstance(refused.exception, redis.ResponseError):
            self.assertIn("Protocol error: invalid bulk length", str(refused.exception))
        self.assertEqual(r.get(k("r")), b"keep")
        self.assertIsNone(r.get(k("r2")))

    def test_limits_close_only_the_offender(self):
        r = self.r
        bad = self.client()
        # More arguments than --resp-max-args: a protocol error ends the
        # connection; redis-py sees it as an error or a closed connection.
        with self.assertRaises((redis.ResponseError, redis.ConnectionError)):
            bad.execute_command("MGET", *["k"] * 6000)
        self.assertTrue(r.ping())


class RedisPyResp3Test(RedisPyTest):
    protocol = 3

    def test_resp3_types(self):
        r, k = self.r, self.k
        hello = r.execute_command("HELLO", 3)
        self.assertEqual(hello[b"proto"], 3)
        r.sadd(k("s3"), "x")
        self.assertEqual(r.execute_command("SMEMBERS", k("s3")), {b"x"})
        self.assertIsNone(r.get(k("none")))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    args, rest = parser.parse_known_args()
    SERVER = args.server
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
