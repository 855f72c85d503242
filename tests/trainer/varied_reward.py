"""A reward with known group structure for the online-filtering test.

Prompts whose answer is even get 0 for every response (an all-equal group, which the filter
drops); the others score by the parity of the response's character codes, which differs between
sampled responses (mixed groups; token counts do not: a random model mostly runs to the limit).
"""


def compute_score(reward_inputs, **kwargs):
    scores = []
    for item in reward_inputs:
        if int(item["ground_truth"]) % 2 == 0:
            value = 0.0
        else:
            value = float(sum(map(ord, item["response"])) % 2 == 0)
        scores.append({"overall": value, "accuracy": value})
    return scores
