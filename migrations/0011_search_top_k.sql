-- G-Chat schema, version 9: search reads its page straight off an index.
-- A search returns officials by the term that matched, then name; with this
-- index that order is an index range over the matching terms, and the read
-- stops at the page: "สำนักงาน" no longer builds 320,852 candidates and
-- sorts them on disk to return 20. Officials found through their agency's
-- names come by agency, then name: the second index. Forward-only.

CREATE INDEX official_terms_page ON official_terms (term, name, official_id) WHERE active;
CREATE INDEX officials_agency_name ON officials (agency_id, name, id) WHERE status = 'active';
