// The Search API, sparse vectors and fork through the official JavaScript client (npm
// `chromadb`, pinned by package-lock.json), unchanged. Run by tests/test_search_official.py:
//
//     node search_workload.mjs http://127.0.0.1:PORT
//
// Prints one JSON object: step name -> what the client returned, or {"error", "message"}
// for a step that threw, and `payloads`: each search's JSON as the client built it, which
// the test runs again embedded to compare.
import { readFileSync } from "node:fs";
import {
  ChromaClient,
  GroupBy,
  K,
  Knn,
  MaxK,
  MinK,
  Rrf,
  Schema,
  Search,
  SparseVectorIndexConfig,
  Val,
} from "chromadb";

const url = new URL(process.argv[2]);
const client = new ChromaClient({ host: url.hostname, port: Number(url.port), ssl: false });

const IDS = Array.from({ length: 10 }, (_, i) => `j${i}`);
const EMBEDDINGS = IDS.map((_, i) => [i, i % 3, 1]);
const DOCUMENTS = [
  "disk full on node seven",
  "node seven rebooted",
  "certificate expired",
  "disk latency high",
  "renew the certificate",
  "seven errors in a row",
  "latency back to normal",
  "nothing to report",
  "full backup done",
  "certificate renewed on node two",
];
const TERMS = [
  [[1, 2], [1, 0.5]],
  [[2, 3], [1, 1]],
  [[4], [1]],
  [[1, 5], [0.5, 1]],
  [[4, 6], [0.5, 0.5]],
  [[2, 7], [0.3, 1]],
  [[5], [1]],
  null,
  [[1, 8], [0.5, 0.5]],
  [[3, 4], [1, 1]],
];
const METADATAS = IDS.map((_, i) => {
  const md = { area: ["disk", "net", "tls"][i % 3], prio: i % 4 };
  if (TERMS[i]) md.terms = { indices: TERMS[i][0], values: TERMS[i][1] };
  return md;
});

const out = {};
const manifest = new URL("./node_modules/chromadb/package.json", import.meta.url);
out.client_version = JSON.parse(readFileSync(manifest, "utf8")).version;

async function step(name, fn) {
  try {
    out[name] = await fn();
  } catch (err) {
    out[name] = { error: err?.constructor?.name ?? "Error", message: String(err?.message ?? err) };
  }
}

function plain(result) {
  return {
    ids: result.ids,
    documents: result.documents,
    embeddings: result.embeddings,
    metadatas: result.metadatas,
    scores: result.scores,
    select: result.select,
  };
}

const schema = new Schema().createIndex(new SparseVectorIndexConfig(), "terms");
const col = await client.createCollection({ name: "hybrid_js", schema, embeddingFunction: null });
await col.add({ ids: IDS, embeddings: EMBEDDINGS, documents: DOCUMENTS, metadatas: METADATAS });

const words = { indices: [1, 4], values: [1, 1] };
const searches = [
  new Search()
    .where(K("prio").gte(1).and(K.DOCUMENT.contains("e")))
    .rank(Knn({ query: [3.2, 1, 1], limit: 6 }))
    .limit(4)
    .select(K.DOCUMENT, K.SCORE, "area"),
  new Search().rank(Knn({ query: words, key: "terms", limit: 5 })).select(K.SCORE, K.METADATA),
  new Search()
    .rank(
      Rrf({
        ranks: [
          Knn({ query: [5, 2, 1], limit: 8, returnRank: true }),
          Knn({ query: words, key: "terms", limit: 8, returnRank: true }),
        ],
        k: 10,
        weights: [1, 2],
      }),
    )
    .limit(5)
    .selectAll(),
  new Search()
    .rank(Knn({ query: [6, 0, 1], limit: 10 }))
    .groupBy(new GroupBy([K("area")], new MinK([K.SCORE], 2)))
    .select(K.SCORE, "area"),
  new Search()
    .rank(Knn({ query: [6, 0, 1], limit: 10 }))
    .groupBy(new GroupBy([K("area")], new MaxK([K("prio"), K.SCORE], 1)))
    .select(K.SCORE, "prio"),
  new Search().where(K.ID.notIn(["j0", "j1"]).or(K.DOCUMENT.contains("disk"))).limit(3, 1),
  new Search()
    .rank(Knn({ query: [0, 0, 1], limit: 4, default: 50 }).multiply(0.5).add(Val(1)))
    .select(K.SCORE),
];
out.payloads = searches.map((s) => s.toPayload());

await step("search", async () => {
  const result = await col.search(searches);
  return { result: plain(result), rows: result.rows() };
});
await step("no_knn", async () => col.search(new Search().rank(Val(1))));
await step("read_level", async () => (await col.search(new Search().limit(1), { readLevel: "index_only" })).ids);
await step("fork", async () => {
  const forked = await col.fork({ name: "hybrid_js_fork" });
  await forked.add({ ids: ["extra"], embeddings: [[0, 0, 0]] });
  return {
    name: forked.name,
    count: await forked.count(),
    source_count: await col.count(),
    fork_count: await col.forkCount(),
    search: plain(await forked.search(searches[1])),
  };
});
await step("fork_taken", async () => col.fork({ name: "hybrid_js_fork" }));

console.log(JSON.stringify(out));
