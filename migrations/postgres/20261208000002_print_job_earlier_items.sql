-- The SimplyPrint items of a print job's attempts before a retry. They carry the job's tag as the
-- current attempt's item does; a webhook about one of them is old news, not the reprint's.
CREATE TABLE print_job_earlier_items (
    print_job_id   UUID NOT NULL,
    simplyprint_id TEXT NOT NULL,
    PRIMARY KEY (print_job_id, simplyprint_id)
);
