from torpor import Retry, task, wait, logger

@task(id="process-video", retry=Retry(max_attempts=5), max_duration=3600)
def process_video(payload: dict) -> dict:
    frames = [f"frame {i}" for i in range(10_000)]      # any in-memory state
    wait.for_(hours=2)                                    # no CPU or memory held for 2 hours
    token = wait.create_token(timeout=86_400)
    logger.info("approve with: torpor tokens complete %s --data true", token.id)
    answer = wait.for_token(token)                        # sleeps as a snapshot until a human answers
    results = thumbnail.batch_trigger_and_wait([{"i": i} for i in range(3)])
    return {"frames": len(frames), "approved": answer, "thumbs": [r.output for r in results]}

@task(id="thumbnail")
def thumbnail(payload: dict) -> str:
    return f"thumb-{payload['i']}.jpg"
