"""Backend-neutral pieces of the query API: parameters, statistics, cursors,
route changes and export rows. Nothing here touches a database or aiohttp, so
every storage backend shapes its answers the same way."""
