package main

import "time"

// Pacing of the fixed-rate flood: requests go out in batches (100 per ms
// for 100k/s), and the number sent so far follows rate × elapsed, so that a
// late wake-up is made up by the next batches instead of lowering the rate.

// pacedDue is how many of total requests should have been sent after
// elapsed at rate requests per second.
func pacedDue(elapsed time.Duration, rate float64, total int64) int64 {
	if elapsed <= 0 || rate <= 0 {
		return 0
	}
	d := int64(elapsed.Seconds() * rate)
	return min(d, total)
}

// pacedBatch is how many to send now: what is due and not yet sent, at most
// maxBatch at a time (so a long stall turns into several bursts of maxBatch,
// not one huge one).
func pacedBatch(sent, due int64, maxBatch int) int {
	if due <= sent {
		return 0
	}
	return int(min(due-sent, int64(maxBatch)))
}

// pacedSleep is how long to wait before the next batch of batch requests is
// due, given that sent have gone out after elapsed; 0 if one is due now.
func pacedSleep(elapsed time.Duration, sent int64, rate float64, batch int) time.Duration {
	if rate <= 0 {
		return 0
	}
	next := time.Duration(float64(sent+int64(batch)) / rate * float64(time.Second))
	if next <= elapsed {
		return 0
	}
	return next - elapsed
}

// batchFor returns the batch size for rate at one batch per millisecond
// (100 for 100k/s), at least 1.
func batchFor(rate float64) int {
	return max(1, int(rate/1000))
}
