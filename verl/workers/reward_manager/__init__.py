from verl.workers.reward_manager.naive import NaiveRewardManager, import_by_path, last_token_index

__all__ = ["NaiveRewardManager", "import_by_path", "last_token_index"]
