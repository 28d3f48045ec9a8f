// Drive a tintdb server with the official JavaScript client (npm `chromadb`, version pinned
// by package-lock.json), unchanged. Run by tests/test_official_clients.py:
//
//     node workload.mjs http://127.0.0.1:PORT
//
// Prints one JSON object: step name -> what the client returned, or
// {"error": <exception class>, "message": ...} for a step that threw. A step that throws
// does not stop the others, so the test can report every mismatch.
import { readFileSync } from "node:fs";
import { AdminClient, ChromaClient } from "chromadb";

const url = new URL(process.argv[2]);
const client = new ChromaClient({
  host: url.hostname,
  port: Number(url.port),
  ssl: url.protocol === "https:",
});

// Four records, 3-d, in an l2 collection: squared distances from [1, 0, 0] are
// a 0, d 1, b 2, c 2, so every nResults cut used below falls between distinct values.
const IDS = ["a", "b", "c", "d"];
const EMBEDDINGS = [
  [1, 0, 0],
  [0, 1, 0],
  [0, 0, 1],
  [1, 1, 0],
];
const DOCUMENTS = ["apple pie", "banana split", "carrot cake", "date bread"];
const METADATAS = [
  { kind: "fruit", n: 1, ripe: true },
  { kind: "fruit", n: 2, ripe: false },
  { kind: "veg", n: 3, ripe: true },
  { kind: "fruit", n: 4, ripe: true },
];

const out = {};
// The package's "exports" hide its package.json from import, so read the installed file.
const manifest = new URL("./node_modules/chromadb/package.json", import.meta.url);
out.client_version = JSON.parse(readFileSync(manifest, "utf8")).version;

async function step(name, fn) {
  try {
    const value = await fn();
    out[name] = value === undefined ? null : value;
  } catch (err) {
    out[name] = { error: err?.constructor?.name ?? typeof err, message: String(err?.message ?? err) };
  }
}

const describe = (col) => ({ id: col.id, name: col.name, metadata: col.metadata ?? null });

// GetResult / QueryResult -> the plain fields the server sent (class instances don't stringify well).
const record = (res) => {
  const keys = ["ids", "embeddings", "documents", "metadatas", "uris", "distances", "include"];
  const plain = {};
  for (const key of keys) {
    if (key in res) plain[key] = res[key] ?? null;
  }
  return plain;
};

await step("heartbeat_positive", async () => (await client.heartbeat()) > 0);
await step("version", () => client.version());

// ------------------------------------------------------------ collections
await step("create", async () =>
  describe(
    await client.createCollection({ name: "fruits", embeddingFunction: null, metadata: { topic: "food" } }),
  ),
);
await step("create_duplicate", async () =>
  describe(await client.createCollection({ name: "fruits", embeddingFunction: null })),
);
await step("get", async () => describe(await client.getCollection({ name: "fruits" })));
await step("get_missing", async () => describe(await client.getCollection({ name: "no_such_collection" })));
await step("get_or_create_existing", async () =>
  describe(
    await client.getOrCreateCollection({ name: "fruits", embeddingFunction: null, metadata: { other: 1 } }),
  ),
);
await step("get_or_create_new", async () =>
  describe(await client.getOrCreateCollection({ name: "veggies", embeddingFunction: null })),
);
await step("list", async () => (await client.listCollections()).map((c) => c.name).sort());
await step("count_collections", () => client.countCollections());

const col = await client.getCollection({ name: "fruits" });

// ------------------------------------------------------------ records
await step("count_empty", () => col.count());
await step("add", () => col.add({ ids: IDS, embeddings: EMBEDDINGS, documents: DOCUMENTS, metadatas: METADATAS }));
await step("count", () => col.count());
await step("add_existing_id", () => col.add({ ids: ["a"], embeddings: [[9, 9, 9]] }));
await step("add_wrong_dimension", () => col.add({ ids: ["z"], embeddings: [[1, 2]] }));
await step("count_after_errors", () => col.count());

await step("get_ids", async () => record(await col.get({ ids: ["c", "a", "missing"] })));
await step("get_all", async () => record(await col.get()));
await step("get_where_eq", async () => record(await col.get({ where: { kind: "fruit" }, include: [] })));
await step("get_where_and", async () =>
  record(await col.get({ where: { $and: [{ kind: "fruit" }, { n: { $gte: 2 } }] }, include: [] })),
);
await step("get_where_or", async () =>
  record(await col.get({ where: { $or: [{ kind: "veg" }, { n: { $lt: 2 } }] }, include: [] })),
);
await step("get_where_in", async () => record(await col.get({ where: { n: { $in: [2, 4, 99] } }, include: [] })));
await step("get_where_ne_bool", async () => record(await col.get({ where: { ripe: { $ne: true } }, include: [] })));
await step("get_where_document", async () => record(await col.get({ whereDocument: { $contains: "cake" } })));
await step("get_where_document_not", async () =>
  record(await col.get({ whereDocument: { $not_contains: "e" }, include: ["documents"] })),
);
await step("get_where_and_document", async () =>
  record(await col.get({ where: { kind: "fruit" }, whereDocument: { $contains: "an" }, include: ["metadatas"] })),
);
await step("get_embeddings_only", async () => record(await col.get({ ids: ["d", "b"], include: ["embeddings"] })));
await step("get_limit_offset", async () => record(await col.get({ limit: 2, offset: 1, include: [] })));
await step("peek", async () => record(await col.peek({ limit: 2 })));
await step("get_rows", async () => (await col.get({ ids: ["a"] })).rows());

const q = [[1, 0, 0]];
await step("query", async () => record(await col.query({ queryEmbeddings: q, nResults: 2 })));
await step("query_include", async () =>
  record(await col.query({ queryEmbeddings: q, nResults: 2, include: ["embeddings", "distances"] })),
);
await step("query_where", async () =>
  record(await col.query({ queryEmbeddings: q, nResults: 3, where: { kind: "veg" } })),
);
await step("query_where_document", async () =>
  record(
    await col.query({
      queryEmbeddings: q,
      nResults: 5,
      whereDocument: { $contains: "p" },
      include: ["documents", "distances"],
    }),
  ),
);
await step("query_two", async () =>
  record(
    await col.query({
      queryEmbeddings: [
        [0, 0, 1],
        [0, 1, 0.1],
      ],
      nResults: 1,
      include: ["distances"],
    }),
  ),
);
await step("query_ids", async () =>
  record(await col.query({ queryEmbeddings: q, ids: ["c", "d"], nResults: 5, include: [] })),
);
await step("query_too_many", async () => record(await col.query({ queryEmbeddings: q, nResults: 50, include: [] })));
await step("query_rows", async () =>
  (await col.query({ queryEmbeddings: q, nResults: 1, include: ["documents", "distances"] })).rows(),
);
await step("query_wrong_dimension", async () => record(await col.query({ queryEmbeddings: [[1, 0]] })));

await step("update", () =>
  col.update({ ids: ["a"], embeddings: [[1, 0, 0]], metadatas: [{ n: 10 }], documents: ["apple tart"] }),
);
await step("update_embedding", () => col.update({ ids: ["b"], embeddings: [[0, 2, 0]] }));
await step("update_missing_id", () => col.update({ ids: ["nope"], metadatas: [{ n: 0 }] }));
await step("get_after_update", async () =>
  record(await col.get({ ids: ["a", "b"], include: ["metadatas", "documents", "embeddings"] })),
);
await step("upsert", () =>
  col.upsert({
    ids: ["a", "e"],
    embeddings: [
      [0.5, 0.5, 0],
      [0, 0, 2],
    ],
    metadatas: [
      { kind: "fruit", extra: "x" },
      { kind: "veg", n: 5 },
    ],
    documents: ["apple crumble", "eggplant stew"],
  }),
);
await step("get_after_upsert", async () =>
  record(await col.get({ ids: ["a", "e"], include: ["metadatas", "documents", "embeddings"] })),
);
await step("count_after_upsert", () => col.count());
// The server puts new vectors in its graph behind the writes: poll until none waits.
await step("indexing_status_settled", async () => {
  const deadline = Date.now() + 30000;
  for (;;) {
    const status = await col.getIndexingStatus();
    if (status.num_unindexed_ops === 0 || Date.now() > deadline) {
      const { num_indexed_ops, num_unindexed_ops, total_ops, op_indexing_progress } = status;
      return { num_indexed_ops, num_unindexed_ops, total_ops, op_indexing_progress };
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
});
await step("delete_ids", () => col.delete({ ids: ["b"] }));
await step("delete_where", () => col.delete({ where: { kind: "veg" } }));
await step("get_after_delete", async () => record(await col.get({ include: ["documents"] })));
await step("count_after_delete", () => col.count());

// ------------------------------------------------------------ modify / delete collection
await step("modify", () => col.modify({ name: "fruits_v2", metadata: { topic: "food", v: 2 } }));
await step("get_renamed", async () => describe(await client.getCollection({ name: "fruits_v2" })));
await step("get_old_name", async () => describe(await client.getCollection({ name: "fruits" })));
await step("count_renamed", async () => (await client.getCollection({ name: "fruits_v2" })).count());
await step("delete_collection", () => client.deleteCollection({ name: "veggies" }));
await step("delete_collection_missing", () => client.deleteCollection({ name: "veggies" }));
await step("list_after_delete", async () => (await client.listCollections()).map((c) => c.name).sort());

// ------------------------------------------------------------ cosine space
await step("create_cosine", async () =>
  describe(
    await client.createCollection({
      name: "angles",
      embeddingFunction: null,
      configuration: { hnsw: { space: "cosine" } },
    }),
  ),
);
const cos = await client.getCollection({ name: "angles" });
await step("cosine_add", () =>
  cos.add({
    ids: ["x", "xy", "y"],
    embeddings: [
      [2, 0],
      [1, 1],
      [0, 3],
    ],
  }),
);
await step("cosine_query", async () =>
  record(await cos.query({ queryEmbeddings: [[1, 0]], nResults: 3, include: ["distances"] })),
);

// ------------------------------------------------------------ list metadata, uris, paging
const tagged = await client.createCollection({ name: "tagged", embeddingFunction: null });
await step("tagged_add", () =>
  tagged.add({
    ids: ["t1", "t2", "t3"],
    embeddings: [
      [1, 0],
      [0, 1],
      [1, 1],
    ],
    metadatas: [{ tags: ["red", "big"] }, { tags: ["blue"] }, { tags: ["red"], w: 0.5 }],
    documents: ["one", "two", "three"],
    uris: ["file:///1", "file:///2", "file:///3"],
  }),
);
await step("tagged_contains", async () =>
  record(await tagged.get({ where: { tags: { $contains: "red" } }, include: ["metadatas", "uris"] })),
);
await step("tagged_not_contains", async () =>
  record(await tagged.get({ where: { tags: { $not_contains: "red" } }, include: [] })),
);
await step("tagged_nin", async () => record(await tagged.get({ where: { w: { $nin: [0.5] } }, include: [] })));
await step("tagged_regex", async () => record(await tagged.get({ whereDocument: { $regex: "^t" }, include: [] })));
await step("tagged_delete_document", () => tagged.delete({ whereDocument: { $contains: "hre" } }));
await step("tagged_after_delete", async () => record(await tagged.get({ include: ["uris", "documents"] })));
await step("list_page", async () => (await client.listCollections({ limit: 2, offset: 1 })).map((c) => c.name));
await step("list_all_in_order", async () => (await client.listCollections()).map((c) => c.name));

// ------------------------------------------------------------ tenants and databases
const admin = new AdminClient({ host: url.hostname, port: Number(url.port), ssl: false });
await step("create_tenant", () => admin.createTenant({ name: "acme" }));
await step("create_tenant_again", () => admin.createTenant({ name: "acme" }));
await step("get_tenant", () => admin.getTenant({ name: "acme" }));
await step("get_tenant_missing", () => admin.getTenant({ name: "no_such_tenant" }));
await step("create_database", () => admin.createDatabase({ name: "db_one", tenant: "acme" }));
await step("create_database_two", () => admin.createDatabase({ name: "db_two", tenant: "acme" }));
await step("get_database", async () => {
  const { id, ...rest } = await admin.getDatabase({ name: "db_one", tenant: "acme" });
  return rest;
});
await step("get_database_missing", () => admin.getDatabase({ name: "no_such_db", tenant: "acme" }));
await step("list_databases", async () =>
  (await admin.listDatabases({ tenant: "acme" })).map((d) => d.name).sort(),
);
await step("scoped_collections", async () => {
  const scoped = new ChromaClient({ host: url.hostname, port: Number(url.port), tenant: "acme", database: "db_one" });
  await scoped.createCollection({ name: "fruits", embeddingFunction: null }); // the name is free in db_one
  return (await scoped.listCollections()).map((c) => c.name);
});
await step("default_unchanged", async () => (await client.listCollections()).map((c) => c.name));
await step("delete_database", () => admin.deleteDatabase({ name: "db_two", tenant: "acme" }));
await step("list_databases_after", async () =>
  (await admin.listDatabases({ tenant: "acme" })).map((d) => d.name).sort(),
);

// ------------------------------------------------------------ reset (the server allows it)
await step("reset", () => client.reset());
await step("list_after_reset", async () => (await client.listCollections()).map((c) => c.name));

process.stdout.write(JSON.stringify(out) + "\n");
