// Serve: the HTTP conventions of the sample functions (images/common/serve.py) for a JVM function,
// on the JDK's own com.sun.net.httpserver.
//
// A function calls Serve.begin() first thing in main (the initialisation clock starts), initialises,
// then calls Serve.serve(name, handler, info). From then on:
// - it listens on 0.0.0.0:$PORT (default 8080) and prints "<name> listening on <port>";
// - every request is counted; the count is in the X-Served header of every answer, and each request
//   prints "request N METHOD PATH" once answered;
// - a request the handler leaves alone (it returns null: GET / for instance, the readiness probe)
//   gets the JSON status {"ok", "served", "pid", "initialised_at", "init_seconds", "function",
//   "restored", "replica", ...}; a restored replica continues the count and keeps pid and
//   initialised_at of the process it was baked from;
// - SIGTERM (from begin() on) exits 0;
// - a handler throwing BadRequest answers 400, any other exception 500, both as JSON;
// - after a restore the prebake runtime sends the signal named by PREBAKE_RESTORE_SIGNAL (the image
//   sets SIGUSR2): the replica then takes a new SecureRandom seeded from the OS, a new replica id
//   from it, reseeds the function's Random through Serve.random(), and says "restored": true and
//   "restored_at" (System.currentTimeMillis(), seconds) from then on.
// Every answer closes its connection (Connection: close), as serve.py's HTTP/1.0 does: no idle
// connection is left open when a checkpoint is taken.

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import java.util.UUID;

final class Serve {
  private Serve() {}

  static final int MAX_BODY = 16 << 20;

  /** A request the handler cannot use: its message goes back with status 400. */
  static final class BadRequest extends RuntimeException {
    BadRequest(String message) {
      super(message);
    }
  }

  record Request(String method, String path, String query, byte[] body, int served) {}

  record Response(int status, String contentType, byte[] body) {
    static Response json(Object value) {
      return new Response(200, "application/json", Json.write(value).getBytes(StandardCharsets.UTF_8));
    }
  }

  interface Handler {
    /** The answer to a request, or null for the JSON status. */
    Response handle(Request request) throws Exception;
  }

  private static long started;
  private static final PrintStream OUT = new PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), true, StandardCharsets.UTF_8);
  // What differs per replica: renewed after a restore.
  private static volatile SecureRandom secure;
  private static volatile String replica;
  private static volatile boolean restored;
  private static volatile double restoredAt;
  private static final Random RANDOM = new Random();

  /** Starts the initialisation clock; SIGTERM exits 0 from here on; the restore signal is handled. */
  static void begin() {
    started = System.nanoTime();
    sun.misc.Signal.handle(new sun.misc.Signal("TERM"), s -> Runtime.getRuntime().halt(0));
    secure = new SecureRandom();
    replica = UUID.randomUUID().toString();
    RANDOM.setSeed(secure.nextLong());
    String name = System.getenv().getOrDefault("PREBAKE_RESTORE_SIGNAL", "");
    if (!name.isEmpty()) sun.misc.Signal.handle(new sun.misc.Signal(name.startsWith("SIG") ? name.substring(3) : name), s -> restored());
  }

  /** The function's random numbers: reseeded from the OS in every restored replica. */
  static Random random() {
    return RANDOM;
  }

  private static void restored() {
    // A new generator seeded from the OS now: the baked one's state is in every replica's memory.
    SecureRandom fresh = new SecureRandom();
    fresh.setSeed(fresh.generateSeed(32));
    secure = fresh;
    byte[] id = new byte[16];
    fresh.nextBytes(id);
    id[6] = (byte) ((id[6] & 0x0f) | 0x40);
    id[8] = (byte) ((id[8] & 0x3f) | 0x80);
    long hi = 0, lo = 0;
    for (int i = 0; i < 8; i++) hi = (hi << 8) | (id[i] & 0xff);
    for (int i = 8; i < 16; i++) lo = (lo << 8) | (id[i] & 0xff);
    replica = new UUID(hi, lo).toString();
    RANDOM.setSeed(fresh.nextLong());
    restoredAt = System.currentTimeMillis() / 1000.0;
    restored = true;
  }

  private static int served;

  /** Answers requests with handler; never returns. */
  static void serve(String name, Handler handler, Map<String, Object> info) throws IOException {
    Map<String, Object> boot = new LinkedHashMap<>();
    boot.put("pid", ProcessHandle.current().pid());
    boot.put("initialised_at", System.currentTimeMillis() / 1000.0);
    boot.put("init_seconds", Math.round((System.nanoTime() - started) / 1e3) / 1e6);
    boot.put("function", name);
    boot.putAll(info);
    int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "8080"));
    HttpServer server = HttpServer.create(new InetSocketAddress("0.0.0.0", port), 64);
    // No executor: the dispatcher thread answers each request itself, one at a time, as serve.py does.
    server.createContext("/", exchange -> answer(exchange, handler, boot));
    server.start();
    OUT.println(name + " listening on " + port);
  }

  private static void answer(HttpExchange exchange, Handler handler, Map<String, Object> boot) throws IOException {
    int n = ++served;
    Response response;
    try {
      String length = exchange.getRequestHeaders().getFirst("Content-Length");
      long declared = length == null ? 0 : Long.parseLong(length.trim());
      if (declared < 0 || declared > MAX_BODY) throw new BadRequest("a body of " + declared + " bytes is not accepted (at most " + MAX_BODY + ")");
      byte[] body = read(exchange.getRequestBody(), (int) declared);
      String raw = exchange.getRequestURI().getRawPath();
      String query = exchange.getRequestURI().getRawQuery();
      response = handler.handle(new Request(exchange.getRequestMethod(), raw, query == null ? "" : query, body, n));
      if (response == null) {
        Map<String, Object> status = new LinkedHashMap<>();
        status.put("ok", true);
        status.put("served", n);
        status.putAll(boot);
        status.put("replica", replica);
        status.put("restored", restored);
        if (restored) status.put("restored_at", restoredAt);
        response = Response.json(status);
      }
    } catch (BadRequest e) {
      response = error(400, n, e.getMessage());
    } catch (Exception e) {
      e.printStackTrace();
      response = error(500, n, e.getClass().getSimpleName() + ": " + e.getMessage());
    }
    exchange.getResponseHeaders().set("Content-Type", response.contentType());
    exchange.getResponseHeaders().set("X-Served", String.valueOf(n));
    exchange.getResponseHeaders().set("Connection", "close");
    exchange.sendResponseHeaders(response.status(), response.body().length == 0 ? -1 : response.body().length);
    try (OutputStream out = exchange.getResponseBody()) {
      out.write(response.body());
    }
    exchange.close();
    OUT.println("request " + n + " " + exchange.getRequestMethod() + " " + exchange.getRequestURI());
  }

  private static Response error(int status, int served, String message) {
    Map<String, Object> body = new LinkedHashMap<>();
    body.put("ok", false);
    body.put("served", served);
    body.put("error", message);
    Response r = Response.json(body);
    return new Response(status, r.contentType(), r.body());
  }

  private static byte[] read(InputStream in, int length) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream(Math.max(0, length));
    byte[] buf = new byte[8192];
    for (int r; (r = in.read(buf)) != -1; ) {
      out.write(buf, 0, r);
      if (out.size() > MAX_BODY) throw new BadRequest("a body over " + MAX_BODY + " bytes is not accepted");
    }
    return out.toByteArray();
  }

  /** JSON output of maps, lists, arrays, strings, numbers, booleans and null. */
  static final class Json {
    private Json() {}

    static String write(Object value) {
      StringBuilder sb = new StringBuilder();
      write(sb, value);
      return sb.toString();
    }

    private static void write(StringBuilder sb, Object v) {
      if (v == null) sb.append("null");
      else if (v instanceof String s) string(sb, s);
      else if (v instanceof Double d) sb.append(Double.isFinite(d) ? d.toString() : "null");
      else if (v instanceof Number || v instanceof Boolean) sb.append(v);
      else if (v instanceof Map<?, ?> m) {
        sb.append('{');
        boolean first = true;
        for (Map.Entry<?, ?> e : m.entrySet()) {
          if (!first) sb.append(", ");
          first = false;
          string(sb, String.valueOf(e.getKey()));
          sb.append(": ");
          write(sb, e.getValue());
        }
        sb.append('}');
      } else if (v instanceof Iterable<?> it) {
        sb.append('[');
        boolean first = true;
        for (Object o : it) {
          if (!first) sb.append(", ");
          first = false;
          write(sb, o);
        }
        sb.append(']');
      } else string(sb, v.toString());
    }

    private static void string(StringBuilder sb, String s) {
      sb.append('"');
      for (int i = 0; i < s.length(); i++) {
        char c = s.charAt(i);
        switch (c) {
          case '"' -> sb.append("\\\"");
          case '\\' -> sb.append("\\\\");
          case '\n' -> sb.append("\\n");
          case '\r' -> sb.append("\\r");
          case '\t' -> sb.append("\\t");
          default -> {
            if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
            else sb.append(c);
          }
        }
      }
      sb.append('"');
    }
  }
}
