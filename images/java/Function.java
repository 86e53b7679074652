// java: a search function on the JVM (OpenJDK 17, the JDK's own HTTP server; Serve.java).
//
// Initialisation generates a corpus from a fixed seed (40,000 documents of 30-90 words drawn from a
// Zipf-like vocabulary of 20,000 made-up words), tokenises it with a regular expression and builds
// an inverted index (term -> documents and term frequencies) with BM25's document statistics, then
// hashes the index (SHA-256) so that any two processes can be told to hold the same one: class
// loading, a few hundred MB allocated and the interpreter's first pass over all of it, the work a
// cold start pays and a restore does not.
//
// POST /search with a text body (words) answers {"ok", "served", "hits": [{"doc", "score"}...],
// "matched"}: the documents that hold any of the words, ranked by BM25, the best 10. Its scoring
// loops run over tens of thousands of postings per request: the JIT compiles them during the bake's
// warm-up requests, and a restored replica has that code; a cold one starts interpreting.
// GET /search?q=WORDS is the same. Any other request answers the JSON status of Serve.java.

import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;
import java.util.Random;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public final class Function {
  static final long SEED = 42;
  static final int DOCUMENTS = 40_000;
  static final int VOCABULARY = 20_000;
  static final int TOP = 10;
  static final double K1 = 1.2, B = 0.75;
  static final Pattern WORD = Pattern.compile("[a-z]+");

  /** One term's postings: the documents holding it, ascending, and how often each holds it. */
  record Postings(int[] docs, int[] freqs) {}

  /** A term's postings while the index is built: grown as documents come. */
  static final class Growing {
    int[] docs = new int[4], freqs = new int[4];
    int n;

    void add(int doc, int freq) {
      if (n == docs.length) {
        docs = Arrays.copyOf(docs, n * 2);
        freqs = Arrays.copyOf(freqs, n * 2);
      }
      docs[n] = doc;
      freqs[n++] = freq;
    }
  }

  final Map<String, Postings> index = new HashMap<>();
  final int[] lengths = new int[DOCUMENTS];
  final double averageLength;
  final String digest;
  final long tokens;

  static String[] vocabulary(Random random) {
    String[] syllables = {"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "zen", "dar", "pel", "qui", "bor", "fax", "gil", "hum"};
    String[] words = new String[VOCABULARY];
    java.util.Set<String> seen = new java.util.HashSet<>();
    for (int i = 0; i < VOCABULARY; ) {
      StringBuilder sb = new StringBuilder();
      int n = 2 + random.nextInt(3);
      for (int s = 0; s < n; s++) sb.append(syllables[random.nextInt(syllables.length)]);
      if (seen.add(sb.toString())) words[i++] = sb.toString();
    }
    return words;
  }

  Function() throws Exception {
    Random random = new Random(SEED);
    String[] words = vocabulary(random);
    // Zipf-like: the cumulative weights of 1/(rank+1), searched by bisection for each word drawn.
    double[] cumulative = new double[VOCABULARY];
    double sum = 0;
    for (int i = 0; i < VOCABULARY; i++) cumulative[i] = sum += 1.0 / (i + 1);
    Map<String, Growing> building = new HashMap<>();
    long total = 0;
    for (int d = 0; d < DOCUMENTS; d++) {
      int length = 30 + random.nextInt(61);
      StringBuilder text = new StringBuilder(length * 8);
      for (int w = 0; w < length; w++) {
        int k = Arrays.binarySearch(cumulative, random.nextDouble() * sum);
        text.append(words[k < 0 ? Math.min(-k - 1, VOCABULARY - 1) : k]).append(w % 12 == 11 ? ". " : " ");
      }
      Map<String, Integer> counts = new HashMap<>();
      Matcher m = WORD.matcher(text);
      int n = 0;
      while (m.find()) {
        counts.merge(m.group(), 1, Integer::sum);
        n++;
      }
      lengths[d] = n;
      total += n;
      for (Map.Entry<String, Integer> e : counts.entrySet()) building.computeIfAbsent(e.getKey(), x -> new Growing()).add(d, e.getValue());
    }
    MessageDigest sha = MessageDigest.getInstance("SHA-256");
    List<String> terms = new ArrayList<>(building.keySet());
    terms.sort(null);
    for (String term : terms) {
      Growing g = building.get(term);
      int[] docs = Arrays.copyOf(g.docs, g.n), freqs = Arrays.copyOf(g.freqs, g.n);
      index.put(term, new Postings(docs, freqs));
      sha.update(term.getBytes(StandardCharsets.UTF_8));
      for (int i = 0; i < docs.length; i++) sha.update(new byte[] {(byte) (docs[i] >> 16), (byte) (docs[i] >> 8), (byte) docs[i], (byte) freqs[i]});
    }
    tokens = total;
    averageLength = (double) total / DOCUMENTS;
    digest = HexFormat.of().formatHex(sha.digest());
  }

  record Hit(int doc, double score) {}

  /** The best TOP documents for the words of `query` by BM25, and how many documents matched. */
  Map<String, Object> search(String query) {
    double[] scores = new double[DOCUMENTS];
    boolean[] hit = new boolean[DOCUMENTS];
    Matcher m = WORD.matcher(query.toLowerCase());
    int words = 0;
    while (m.find()) {
      words++;
      Postings p = index.get(m.group());
      if (p == null) continue;
      double idf = Math.log(1 + (DOCUMENTS - p.docs().length + 0.5) / (p.docs().length + 0.5));
      for (int i = 0; i < p.docs().length; i++) {
        int d = p.docs()[i];
        double f = p.freqs()[i];
        scores[d] += idf * f * (K1 + 1) / (f + K1 * (1 - B + B * lengths[d] / averageLength));
        hit[d] = true;
      }
    }
    if (words == 0) throw new Serve.BadRequest("no words to search for: send letters a-z");
    PriorityQueue<Hit> best = new PriorityQueue<>((a, b) -> a.score() != b.score() ? Double.compare(a.score(), b.score()) : Integer.compare(b.doc(), a.doc()));
    int matched = 0;
    for (int d = 0; d < DOCUMENTS; d++) {
      if (!hit[d]) continue;
      matched++;
      if (best.size() < TOP) best.add(new Hit(d, scores[d]));
      else if (scores[d] > best.peek().score()) {
        best.poll();
        best.add(new Hit(d, scores[d]));
      }
    }
    List<Map<String, Object>> hits = new ArrayList<>();
    while (!best.isEmpty()) {
      Hit h = best.poll();
      Map<String, Object> o = new LinkedHashMap<>();
      o.put("doc", h.doc());
      o.put("score", Math.round(h.score() * 1e4) / 1e4);
      hits.add(0, o);
    }
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("matched", matched);
    out.put("hits", hits);
    return out;
  }

  static String text(byte[] body) {
    try {
      return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT).decode(java.nio.ByteBuffer.wrap(body)).toString();
    } catch (CharacterCodingException e) {
      throw new Serve.BadRequest("the body is not UTF-8");
    }
  }

  Serve.Response handle(Serve.Request request) {
    if (!request.path().equals("/search")) return null;
    String query;
    if (request.method().equals("POST")) query = text(request.body());
    else {
      query = "";
      for (String pair : request.query().split("&"))
        if (pair.startsWith("q=")) query = java.net.URLDecoder.decode(pair.substring(2), StandardCharsets.UTF_8);
    }
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("ok", true);
    out.put("served", request.served());
    out.putAll(search(query));
    return Serve.Response.json(out);
  }

  public static void main(String[] args) throws Exception {
    Serve.begin();
    Function f = new Function();
    // What building left behind goes now, not in the first requests' collections; with a heap that
    // may shrink (-Xms below -Xmx) the JVM also gives the free part back to the OS.
    System.gc();
    Map<String, Object> info = new LinkedHashMap<>();
    info.put("documents", DOCUMENTS);
    info.put("terms", f.index.size());
    info.put("tokens", f.tokens);
    info.put("index_sha256", f.digest);
    info.put("java_version", System.getProperty("java.vm.version"));
    Serve.serve("java", f::handle, info);
  }
}
