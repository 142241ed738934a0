#include "store/node_repository.h"

#include "store/repository.h"

namespace gatehouse {

using namespace repository;

Result<void> NodeRepository::Save(const NodeRecord& node) {
  return RunStatement(
      store_, "",
      "INSERT INTO nodes (id, host, pid, pid_namespace, started_at, seen_at, pepper, "
      "previous_pepper, next_pepper, key_prefix) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
      "$10) "
      "ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
      "pid_namespace = excluded.pid_namespace, started_at = excluded.started_at, "
      "seen_at = excluded.seen_at, pepper = excluded.pepper, "
      "previous_pepper = excluded.previous_pepper, next_pepper = excluded.next_pepper, "
      "key_prefix = excluded.key_prefix",
      {SqlText(node.id), SqlText(node.host), SqlInt(node.pid), SqlText(node.pid_namespace),
       SqlInt(node.started_at), SqlInt(node.seen_at), SqlText(node.pepper),
       SqlText(node.previous_pepper), SqlText(node.next_pepper), SqlText(node.key_prefix)});
}

Result<std::vector<NodeRecord>> NodeRepository::SeenSince(UnixMicros since) {
  return Run<std::vector<NodeRecord>>(
      store_, "", false, [&](SqlTx& tx) -> Result<std::vector<NodeRecord>> {
        auto r = tx.Query(
            "SELECT id, host, pid, pid_namespace, started_at, seen_at, pepper, previous_pepper, "
            "next_pepper, key_prefix FROM nodes WHERE seen_at >= $1 ORDER BY started_at, id",
            {SqlInt(since)});
        if (!r) return tl::unexpected(r.error());
        std::vector<NodeRecord> out;
        for (int i = 0; i < r->size(); ++i) {
          out.push_back(NodeRecord{r->Text(i, 0), r->Text(i, 1), r->Int(i, 2), r->Text(i, 3),
                                   r->Int(i, 4), r->Int(i, 5), r->Text(i, 6), r->Text(i, 7),
                                   r->Text(i, 8), r->Text(i, 9)});
        }
        return out;
      });
}

Result<void> NodeRepository::Remove(std::string_view id) {
  return RunStatement(store_, "", "DELETE FROM nodes WHERE id = $1", {SqlText(id)});
}

}  // namespace gatehouse
